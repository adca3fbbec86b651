"""Edge cases and invalid payloads, each with the outcome the product-service contract promises.

None of them changes stock: every buy or stock update here is rejected by validation, so the
inventory oracle never has to account for them. Values containing "{product}" are filled with a
real product name by render(); labels are safe in request names (Edge_Case_<label>).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

PLACEHOLDER = "{product}"
JSON_HEADERS = {"Content-Type": "application/json"}

NOT_FOUND = "RESOURCE_NOT_FOUND"
VALIDATION = "VALIDATION_ERROR"


def _fill(value: Any, product: str) -> Any:
    """A copy of a JSON value with the placeholder replaced in every string (keys included)."""
    if isinstance(value, str):
        return value.replace(PLACEHOLDER, product) if PLACEHOLDER in value else value
    if isinstance(value, dict):
        return {_fill(key, product): _fill(item, product) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, product) for item in value]
    return value


def _needs_product(*values: Any) -> bool:
    return any(PLACEHOLDER in repr(value) for value in values if value is not None)


class Rendered(NamedTuple):
    json: Any
    params: dict[str, str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeCase:
    """One request with its expected outcome: a status and error code, or a category item-count range."""

    label: str
    method: str
    path: str
    json: Any = None
    body: bytes | None = None  # raw body (for bodies json= cannot produce); sent as application/json
    params: dict[str, str] | None = None
    expect_status: int
    expect_code: str | None = None
    expect_items: tuple[int, int] | None = None  # (min, max) items of a 200 product list
    needs_product: bool = False  # json/params contain "{product}": render() with a real name first

    def render(self, product: str | None = None) -> Rendered:
        """json and params with "{product}" replaced by a real product name."""
        if not self.needs_product:
            return Rendered(self.json, self.params)
        if not product:
            raise ValueError(f"edge case {self.label} needs a product name")
        return Rendered(_fill(self.json, product), _fill(self.params, product))

    def request_kwargs(self, product: str | None = None) -> dict[str, Any]:
        """Keyword arguments for client.request(method, path, ...) that work with both Locust clients."""
        json, params = self.render(product)
        kwargs: dict[str, Any] = {}
        if params is not None:
            kwargs["params"] = params
        if self.body is not None:
            kwargs["data"] = self.body
            kwargs["headers"] = JSON_HEADERS
        elif json is not None:
            kwargs["json"] = json
        return kwargs


def _category(label: str, category: str, items: tuple[int, int]) -> EdgeCase:
    return EdgeCase(label=label, method="GET", path="/products/category", params={"category": category},
                    expect_status=200, expect_items=items)


def _details(label: str, payload: Any, status: int, code: str | None, needs_product: bool = False) -> EdgeCase:
    return EdgeCase(label=label, method="POST", path="/products/details", json=payload,
                    expect_status=status, expect_code=code, needs_product=needs_product)


EDGE_CASES: tuple[EdgeCase, ...] = (
    _category("category_lowercase", "books", (0, 0)),  # the filter is case-sensitive
    _category("category_trailing_space", "Books ", (0, 0)),
    _category("category_exact", "Books", (1, 1000)),
    _category("category_unicode", "B\u00fccher \u66f8\u7c4d", (0, 0)),
    _category("category_query_chars", "Books&category=Electronics", (0, 0)),  # must arrive URL-encoded
    _category("category_sql_injection", "Books' OR '1'='1", (0, 0)),
    EdgeCase(label="category_empty", method="GET", path="/products/category", params={"category": ""},
             expect_status=400, expect_code=VALIDATION),
    _details("details_apostrophe_unknown", {"name": "Nobody's Unlisted Product"}, 404, NOT_FOUND),
    _details("details_unicode_name", {"name": "Caf\u00e9 \u2615 \u5546\u54c1 \U0001F6D2"}, 404, NOT_FOUND),
    _details("details_empty_name", {"name": ""}, 400, VALIDATION),
    _details("details_null_name", {"name": None}, 400, VALIDATION),
    _details("details_whitespace_name", {"name": "   "}, 404, NOT_FOUND),  # non-empty passes 'required'
    _details("details_long_name", {"name": "x" * 200}, 404, NOT_FOUND),  # below the 256-character limit
    _details("details_sql_injection", {"name": "' OR '1'='1' --"}, 404, NOT_FOUND),
    _details("details_name_not_string", {"name": 123}, 400, VALIDATION),
    _details("details_trailing_space", {"name": PLACEHOLDER + " "}, 404, NOT_FOUND, needs_product=True),
    _details("details_key_case_insensitive", {"NAME": PLACEHOLDER}, 200, None, needs_product=True),
    EdgeCase(label="buy_quantity_string", method="POST", path="/products/buy",
             json={"name": PLACEHOLDER, "quantity": "1"}, expect_status=400, expect_code=VALIDATION,
             needs_product=True),
    EdgeCase(label="buy_json_array", method="POST", path="/products/buy",
             body=b'[{"name": "anything", "quantity": 1}]', expect_status=400, expect_code=VALIDATION),
)


@dataclass(frozen=True, slots=True)
class InvalidPayload:
    """A buy or stock-update body the service must reject (raw bytes for malformed JSON)."""

    label: str
    payload: Any  # a JSON value, or bytes sent as-is
    expect_status: int = 400
    expect_code: str = VALIDATION

    @property
    def needs_product(self) -> bool:
        return not isinstance(self.payload, bytes) and _needs_product(self.payload)

    def render(self, product: str | None = None) -> Any:
        """The payload with "{product}" replaced by a real product name."""
        if not self.needs_product:
            return self.payload
        if not product:
            raise ValueError(f"invalid payload {self.label} needs a product name")
        return _fill(self.payload, product)

    def request_kwargs(self, product: str | None = None) -> dict[str, Any]:
        """Keyword arguments for client.post/patch(path, ...) that work with both Locust clients."""
        if isinstance(self.payload, bytes):
            return {"data": self.payload, "headers": JSON_HEADERS}
        return {"json": self.render(product)}


INVALID_BUY_PAYLOADS: tuple[InvalidPayload, ...] = (
    InvalidPayload("missing_name", {"quantity": 1}),
    InvalidPayload("empty_name", {"name": "", "quantity": 1}),
    InvalidPayload("missing_quantity", {"name": PLACEHOLDER}),
    InvalidPayload("quantity_zero", {"name": PLACEHOLDER, "quantity": 0}),
    InvalidPayload("quantity_negative", {"name": PLACEHOLDER, "quantity": -1}),
    InvalidPayload("quantity_string", {"name": PLACEHOLDER, "quantity": "5"}),
    InvalidPayload("quantity_float", {"name": PLACEHOLDER, "quantity": 5.5}),
    InvalidPayload("quantity_bool", {"name": PLACEHOLDER, "quantity": True}),
    InvalidPayload("quantity_null", {"name": PLACEHOLDER, "quantity": None}),
    InvalidPayload("malformed_json", b'{"name": "anything", "quantity": '),
    InvalidPayload("empty_body", b""),
)

INVALID_STOCK_PAYLOADS: tuple[InvalidPayload, ...] = (
    InvalidPayload("missing_name", {"stock": 10}),
    InvalidPayload("empty_name", {"name": "", "stock": 10}),
    InvalidPayload("missing_stock", {"name": PLACEHOLDER}),
    InvalidPayload("stock_zero", {"name": PLACEHOLDER, "stock": 0}),  # the contract's 'required' quirk
    InvalidPayload("stock_negative", {"name": PLACEHOLDER, "stock": -5}),
    InvalidPayload("stock_string", {"name": PLACEHOLDER, "stock": "5"}),
    InvalidPayload("stock_float", {"name": PLACEHOLDER, "stock": 5.5}),
    InvalidPayload("stock_bool", {"name": PLACEHOLDER, "stock": True}),
    InvalidPayload("malformed_json", b'{"name": "anything", "stock": '),
)
