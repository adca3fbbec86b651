"""Load and validate the seed catalogue: a JSON list of products."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CATALOG = Path(__file__).with_name("catalog.json")
MAX_TEXT = 256  # same bound the service enforces on names and categories it receives
MAX_STOCK = 2**63 - 1  # SQLite INTEGER and Go's int64


class CatalogError(Exception):
    """The catalogue file cannot be read or does not describe valid products."""


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    description: str
    price: float
    stock: int
    category: str


def _text(entry: dict, key: str, index: int, *, required: bool) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or (required and not value):
        raise CatalogError(f"product #{index}: '{key}' must be a non-empty string" if required
                           else f"product #{index}: '{key}' must be a string")
    if key != "description" and len(value) > MAX_TEXT:
        raise CatalogError(f"product #{index}: '{key}' is longer than {MAX_TEXT} characters")
    return value


def parse_catalog(raw: object) -> list[Product]:
    """Turn decoded JSON into products, rejecting anything the service could not serve."""
    if not isinstance(raw, list) or not raw:
        raise CatalogError("the catalogue must be a non-empty JSON list of products")
    products: list[Product] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise CatalogError(f"product #{index} is not a JSON object")
        name = _text(entry, "name", index, required=True)
        if name in seen:
            raise CatalogError(f"product #{index}: duplicate name {name!r}")
        seen.add(name)
        price, stock = entry.get("price"), entry.get("stock")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise CatalogError(f"product #{index}: 'price' must be a number >= 0")
        if isinstance(stock, bool) or not isinstance(stock, int) or not 0 <= stock <= MAX_STOCK:
            raise CatalogError(f"product #{index}: 'stock' must be an integer >= 0")
        products.append(Product(name, _text(entry, "description", index, required=False), float(price),
                                stock, _text(entry, "category", index, required=True)))
    return products


def load_catalog(path: Path) -> list[Product]:
    """Read and validate a catalogue file; every problem becomes one CatalogError line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read catalogue {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CatalogError(f"catalogue {path} is not valid JSON: {exc}") from None
    try:
        return parse_catalog(raw)
    except CatalogError as exc:
        raise CatalogError(f"catalogue {path}: {exc}") from None
