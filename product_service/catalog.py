"""Load and validate the seed catalogue: a JSON list of products, or the Go service's own data file.

The Go service keeps its products in one JSON object keyed by product name
(`{"Blender Pro": {"name": "Blender Pro", ...}, ...}`); that file is accepted as it is, so the
reference can be seeded with exactly the real data. A key is the product's name: an inner "name"
must equal it (a mismatch is refused, since the Go service finds products by key but shows the
inner name), and a missing one is filled from the key.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CATALOG = Path(__file__).with_name("catalog.json")
MAX_TEXT = 256  # same bound the service enforces on names and categories it receives
MAX_STOCK = 2**63 - 1  # SQLite INTEGER and Go's int64
MAX_SHOWN = 60  # characters of a name quoted in an error
FORMATS = "a non-empty JSON list of products or a non-empty JSON object keyed by product name"


class CatalogError(Exception):
    """The catalogue file cannot be read or does not describe valid products."""


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    description: str
    price: float
    stock: int
    category: str


def _shown(name: str) -> str:
    return repr(name if len(name) <= MAX_SHOWN else name[:MAX_SHOWN] + "...")


def _text(entry: dict, key: str, where: str, *, required: bool) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or (required and not value):
        raise CatalogError(f"{where}: '{key}' must be a non-empty string" if required
                           else f"{where}: '{key}' must be a string")
    if key != "description" and len(value) > MAX_TEXT:
        raise CatalogError(f"{where}: '{key}' is longer than {MAX_TEXT} characters")
    return value


def _product(entry: object, where: str) -> Product:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where} is not a JSON object (the catalogue is {FORMATS})")
    name = _text(entry, "name", where, required=True)
    price, stock = entry.get("price"), entry.get("stock")
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
        raise CatalogError(f"{where}: 'price' must be a number >= 0")
    if isinstance(stock, bool) or not isinstance(stock, int) or not 0 <= stock <= MAX_STOCK:
        raise CatalogError(f"{where}: 'stock' must be an integer >= 0")
    return Product(name, _text(entry, "description", where, required=False), float(price), stock,
                   _text(entry, "category", where, required=True))


def _keyed_entries(raw: dict) -> list[tuple[object, str]]:
    """The Go data file's entries with their names checked against (or filled from) their keys."""
    entries: list[tuple[object, str]] = []
    for key, entry in raw.items():
        where = f"product {_shown(key)}"
        if not key:
            raise CatalogError("a product's key is \"\": the key is the product's name, give it one")
        if isinstance(entry, dict):
            inner = entry.get("name")
            if inner is None:  # missing or null: the key is the name
                entry = {**entry, "name": key}
            elif isinstance(inner, str) and inner and inner != key:
                raise CatalogError(f"{where}: its 'name' {_shown(inner)} differs from its key; "
                                   "make them equal or drop 'name' (the key is the name)")
        entries.append((entry, where))
    return entries


def parse_catalog(raw: object) -> list[Product]:
    """Turn decoded JSON (a list, or the Go service's object keyed by name) into products it could serve."""
    if isinstance(raw, list) and raw:
        entries = [(entry, f"product #{index}") for index, entry in enumerate(raw)]
    elif isinstance(raw, dict) and raw:
        entries = _keyed_entries(raw)
    else:
        raise CatalogError(f"the catalogue must be {FORMATS}")
    products: list[Product] = []
    seen: set[str] = set()
    for entry, where in entries:
        product = _product(entry, where)
        if product.name in seen:
            raise CatalogError(f"{where}: duplicate name {_shown(product.name)}")
        seen.add(product.name)
        products.append(product)
    return products


class _DuplicateKey(ValueError):
    """A JSON object names the same key twice (json.loads would silently keep the last)."""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def load_catalog(path: Path) -> list[Product]:
    """Read and validate a catalogue file; every problem becomes one CatalogError line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read catalogue {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise CatalogError(f"catalogue {path}: the key {_shown(str(exc.args[0]))} appears twice in one JSON object; "
                           "keep one (a product name or a field given twice)") from None
    except (ValueError, RecursionError) as exc:
        raise CatalogError(f"catalogue {path} is not valid JSON: {exc}") from None
    try:
        return parse_catalog(raw)
    except CatalogError as exc:
        raise CatalogError(f"catalogue {path}: {exc}") from None
