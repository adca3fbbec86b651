"""Request bodies decoded and validated the way the Go service's Fiber BodyParser + validator do."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .responses import INVALID_BODY, validation_failed

MAX_NAME = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(_: str) -> float:
    raise ValueError("NaN and Infinity are not JSON")  # Go's decoder rejects them too


def decode_json(body: bytes, fields: tuple[str, ...]) -> dict[str, object]:
    """The known fields of a JSON object body; keys match case-insensitively as in Go's encoding/json."""
    try:
        # Go replaces invalid UTF-8 with U+FFFD rather than failing; decoding with "replace" matches it.
        value = json.loads(body.decode("utf-8", "replace"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise INVALID_BODY from None
    if not isinstance(value, dict):
        raise INVALID_BODY
    found: dict[str, object] = {}
    for key, item in value.items():
        folded = key.lower()
        if folded in fields:
            found[folded] = item
    return found


def _string(value: object) -> str:
    """A JSON string field; null counts as absent (Go leaves the zero value), other types are a format error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise INVALID_BODY
    # Go's decoder turns an unpaired \ud800 escape into U+FFFD; SQLite could not store it otherwise.
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def _integer(value: object) -> int:
    """A JSON integer field that fits Go's int64; 5.0, "5" and true are format errors, null is 0."""
    if value is None:
        return 0
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise INVALID_BODY
    return value


def _name(value: object, max_name: int | None) -> str:
    name = _string(value)
    if not name:
        raise validation_failed("Name", "required")
    if max_name is not None and len(name) > max_name:
        raise validation_failed("Name", "max")
    return name


@dataclass(frozen=True, slots=True)
class StockUpdate:
    name: str
    stock: int


@dataclass(frozen=True, slots=True)
class BuyOrder:
    name: str
    quantity: int


DETAILS_FIELDS = ("name",)
STOCK_FIELDS = ("name", "stock")
BUY_FIELDS = ("name", "quantity")
Fields = dict[str, object]


def details_from(fields: Fields, max_name: int | None = MAX_NAME) -> str:
    """The product name of a details request (`validate:"required,max=256"`)."""
    return _name(fields.get("name"), max_name)


def stock_update_from(fields: Fields, max_name: int | None = MAX_NAME) -> StockUpdate:
    """`stock` is `validate:"required,gte=0"`: the zero value fails 'required', so stock 0 is rejected."""
    stock = _integer(fields.get("stock"))  # type errors first: the Go parser fails before validation runs
    name = _name(fields.get("name"), max_name)
    if stock == 0:
        raise validation_failed("Stock", "required")
    if stock < 0:
        raise validation_failed("Stock", "gte")
    return StockUpdate(name, stock)


def buy_from(fields: Fields, max_name: int | None = MAX_NAME) -> BuyOrder:
    """`quantity` is `validate:"required,gt=0"`: 0 fails 'required', a negative number fails 'gt'."""
    quantity = _integer(fields.get("quantity"))
    name = _name(fields.get("name"), max_name)
    if quantity == 0:
        raise validation_failed("Quantity", "required")
    if quantity < 0:
        raise validation_failed("Quantity", "gt")
    return BuyOrder(name, quantity)


def parse_details(body: bytes) -> str:
    return details_from(decode_json(body, DETAILS_FIELDS))


def parse_stock_update(body: bytes) -> StockUpdate:
    return stock_update_from(decode_json(body, STOCK_FIELDS))


def parse_buy(body: bytes) -> BuyOrder:
    return buy_from(decode_json(body, BUY_FIELDS))
