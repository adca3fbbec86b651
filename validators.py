"""Contract checks for Locust responses: each task hands its response to one `expect_*` call.

Works with both Locust clients (FastHttpUser's geventhttpclient responses and HttpUser's
requests responses) inside `with client.<method>(..., name=..., catch_response=True) as resp:`.
An `expect_*` call marks the request: `resp.success()` when the response is what the contract
promises (including expected business outcomes such as INSUFFICIENT_STOCK), otherwise
`resp.failure("<check>: expected <what>, saw <what>")`. Locust groups failures by that text, so
it never carries per-request values (product names, stock levels, timestamps). Every failure is
also counted in run_stats.STATS; a check never raises out of a task.

The small `check_*` functions raise CheckFailed and can be composed into new `expect_*` calls.
Hot path: one JSON parse per response at most (orjson when installed, the standard parser only when
orjson refuses a body, so both accept and reject exactly the same bodies), precompiled patterns, no
logging, and a product check that computes a failure text only for the product that fails.
"""
from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from run_stats import STATS

if TYPE_CHECKING:
    from test_data import EdgeCase

JSON = "application/json"
STOCK_UPDATED = "Stock updated successfully"

_INSUFFICIENT = re.compile(r"Available: (-?\d+), Requested: (-?\d+)\s*\Z")
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,39}\Z")
_MEDIA = re.compile(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,40}\Z")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,24}\Z")


def _reject_constant(_: str) -> float:
    raise ValueError("NaN and Infinity are not JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode

try:  # about 3x faster than the standard parser on a product list
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is in requirements.txt
    _fast_loads = None


def _parse(content: bytes | str) -> Any:
    """Parse JSON; ValueError if it is not (NaN and Infinity included)."""
    if _fast_loads is not None:
        try:
            return _fast_loads(content)
        except ValueError:  # orjson also refuses integers beyond 64 bits: the standard parser decides
            pass
    return _decode(content.decode("utf-8") if type(content) is bytes else content)


class CheckFailed(Exception):
    """A contract check failed; `reason` is the whole failure text, `status` is set for status mismatches."""

    def __init__(self, check: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.reason = f"{check}: {detail}"
        self.status = status


class BuyOutcome(NamedTuple):
    """What a buy did, as far as the response tells: ok, insufficient, not_found, or failed (unknown)."""

    kind: Literal["ok", "insufficient", "not_found", "failed"]
    remaining: int | None = None  # remainingStock of an ok buy
    available: int | None = None  # "Available: N" of an insufficient-stock answer


_BUY_FAILED = BuyOutcome("failed")
_BUY_NOT_FOUND = BuyOutcome("not_found")


# ---- how values are described in failure reasons (always from a small fixed vocabulary) ----

def _describe(value: object) -> str:
    if value is None:
        return "null or missing"
    if value is True or value is False:
        return "bool"
    if type(value) is str and not value:
        return "empty string"
    if type(value) in (int, float) and not value >= 0:
        return "negative number"
    return type(value).__name__


def _small(value: object) -> str:
    return str(value) if type(value) is int and 0 <= value < 100 else _describe(value)


def _shape(body: object) -> str:
    if type(body) is not dict:
        return _describe(body)
    status = body.get("status")
    if status in ("success", "error", "ok"):
        return f"status={status}"
    keys = sorted(key if _KEY.match(key) else "?" for key in body)[:6]
    return f"keys [{', '.join(keys)}]"


def _code_token(code: object) -> str:
    return code if type(code) is str and _CODE.match(code) else "an unknown code"


def _request_name(resp: Any) -> str:
    meta = getattr(resp, "request_meta", None)
    return (meta.get("name") if meta else None) or "(unnamed)"


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it wraps, outermost first (requests, urllib3, geventhttpclient all wrap)."""
    chain = [error]
    for _ in range(6):
        inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else None
        for attribute in ("original", "reason"):  # geventhttpclient RetriesExceeded, urllib3 MaxRetryError
            wrapped = getattr(error, attribute, None)
            if inner is None and isinstance(wrapped, BaseException):
                inner = wrapped
        error = inner or error.__cause__ or error.__context__
        if error is None or error in chain:
            break
        chain.append(error)
    return chain


# Exception types are recognised by class name so that this module imports neither requests nor
# urllib3 (both import ssl, which must happen after Locust's gevent monkey-patching).
def _is_explicit_timeout(kind: type) -> bool:
    """gevent.Timeout, requests.exceptions.Timeout (ReadTimeout, ConnectTimeout)."""
    return any(base.__name__ == "Timeout" for base in kind.__mro__)


def _is_root_timeout(kind: type) -> bool:
    """socket.timeout / TimeoutError, urllib3's TimeoutError; not urllib3's NewConnectionError,
    which subclasses ConnectTimeoutError although it means the connection was refused."""
    return kind.__name__ != "NewConnectionError" and any(base.__name__ == "TimeoutError" for base in kind.__mro__)


def _transport_failure(error: BaseException | None) -> CheckFailed:
    if error is None:
        return CheckFailed("connection", "no response")
    chain = _causes(error)
    root = chain[-1]
    if any(_is_explicit_timeout(type(e)) for e in chain) or _is_root_timeout(type(root)):
        return CheckFailed("timeout", "no response within the request timeout")
    return CheckFailed("connection", type(root).__name__)


# ---- the individual checks: each raises CheckFailed or returns what it validated ----

def check_transport(resp: Any) -> None:
    """A response arrived (status 0 means the connection failed or timed out)."""
    if not resp.status_code:
        raise _transport_failure(getattr(resp, "error", None))


def json_body(resp: Any) -> Any:
    """The parsed JSON body (parse once; pass the result on to the other checks)."""
    try:
        content = resp.content
    except Exception as error:  # FastHttp reads the body lazily: a reset or timeout shows up here
        raise _transport_failure(error) from None
    if not content:
        if _cut_short(resp, content):
            raise CheckFailed("connection", "closed before the body announced by Content-Length")
        raise CheckFailed("json", "expected a JSON body, saw an empty body")
    try:
        return _parse(content)
    except ValueError:
        if _cut_short(resp, content):
            raise CheckFailed("connection", "closed before the body announced by Content-Length") from None
        raise CheckFailed("json", "expected a JSON body, saw invalid JSON") from None


def _cut_short(resp: Any, content: bytes) -> bool:
    """The body is shorter than its Content-Length (FastHttpUser hands over what arrived before the close)."""
    headers = resp.headers
    if headers is None or headers.get("Content-Encoding"):  # a decoded body has another length
        return False
    announced = headers.get("Content-Length")
    if isinstance(announced, list):  # geventhttpclient returns a list for a repeated header
        announced = announced[0] if announced else None
    try:
        return announced is not None and len(content) < int(announced)
    except (TypeError, ValueError):
        return False


def _error_code_of(resp: Any) -> str | None:
    """The error code of an error envelope, if the body is one; never raises."""
    try:
        body = json_body(resp)
    except Exception:
        return None
    error = body.get("error") if type(body) is dict else None
    code = error.get("code") if type(error) is dict else None
    return code if type(code) is str and _CODE.match(code) else None


def _status_failure(resp: Any, expected: int, code: str | None = None) -> CheckFailed:
    status = resp.status_code
    code = code or _error_code_of(resp)
    return CheckFailed("status", f"expected {expected}, saw {status} {code}" if code else
                       f"expected {expected}, saw {status}", status=status)


def check_status(resp: Any, expected: int) -> None:
    """The HTTP status is the one the contract promises (the error code, if any, goes in the reason)."""
    if resp.status_code != expected:
        raise _status_failure(resp, expected)


def check_content_type(resp: Any) -> None:
    """Content-Type is application/json (parameters such as charset allowed)."""
    headers = resp.headers
    value = headers.get("Content-Type") if headers is not None else None
    if value == JSON:
        return
    if isinstance(value, list):  # geventhttpclient returns a list for a repeated header
        value = value[0] if value else None
    media = value.partition(";")[0].strip().lower() if isinstance(value, str) else ""
    if media == JSON:
        return
    seen = media if _MEDIA.match(media) else ("none" if not media else "another type")
    raise CheckFailed("content_type", f"expected {JSON}, saw {seen}")


def check_success_envelope(body: Any) -> Any:
    """{"status": "success", "data": ...}; returns data."""
    if type(body) is dict and body.get("status") == "success" and "data" in body:
        return body["data"]
    raise CheckFailed("envelope", f"expected status=success with data, saw {_shape(body)}")


def check_error_envelope(body: Any, code: str | None = None) -> dict:
    """{"status": "error", "error": {"code": str, "message": str}} with that code; returns the error."""
    error = body.get("error") if type(body) is dict and body.get("status") == "error" else None
    if type(error) is dict and type(error.get("code")) is str and type(error.get("message")) is str:
        if code is None or error["code"] == code:
            return error
        raise CheckFailed("error_code", f"expected {code}, saw {_code_token(error['code'])}")
    raise CheckFailed("error_envelope", f"expected status=error with error.code and error.message, saw {_shape(body)}")


def _product_problem(product: Any) -> str | None:
    if type(product) is not dict:
        return f"expected a product object, saw {_describe(product)}"
    name = product.get("name")
    if type(name) is not str or not name:
        return f"expected name as non-empty string, saw {_describe(name)}"
    if type(product.get("description")) is not str:
        return f"expected description as string, saw {_describe(product.get('description'))}"
    price = product.get("price")
    if type(price) not in (int, float) or not price >= 0:
        return f"expected price as number >= 0, saw {_describe(price)}"
    stock = product.get("stock")
    if type(stock) is not int or stock < 0:
        return f"expected stock as integer >= 0, saw {_describe(stock)}"
    if type(product.get("category")) is not str:
        return f"expected category as string, saw {_describe(product.get('category'))}"
    return None


def _valid_product(product: Any) -> bool:
    """The same rules as _product_problem, without building a failure text (the hot path)."""
    if type(product) is not dict:
        return False
    get = product.get
    name, price, stock = get("name"), get("price"), get("stock")
    return (type(name) is str and name != "" and type(get("description")) is str
            and (type(price) is int or type(price) is float) and price >= 0
            and type(stock) is int and stock >= 0 and type(get("category")) is str)


def check_product(product: Any) -> dict:
    """name non-empty str, description str, price number >= 0, stock int >= 0, category str (bools rejected)."""
    if not _valid_product(product):
        raise CheckFailed("product_schema", _product_problem(product) or "expected a valid product")
    return product


def check_product_list(data: Any) -> list[dict]:
    """A list of valid products with unique names."""
    if type(data) is not list:
        raise CheckFailed("product_list", f"expected a list, saw {_describe(data)}")
    if not all(map(_valid_product, data)):
        for product in data:
            problem = _product_problem(product)
            if problem:
                raise CheckFailed("product_schema", problem)
    if len({product["name"] for product in data}) != len(data):
        raise CheckFailed("product_list", "expected unique names, saw duplicates")
    return data


def check_category_filter(products: list[dict], category: str) -> None:
    """Every product has exactly the requested category (the filter is exact and case-sensitive)."""
    for product in products:
        if product["category"] != category:
            raise CheckFailed("category_filter", f"expected only {category!r}, saw other categories")


def check_buy_result(data: Any, name: str, quantity: int) -> int:
    """{"productName": name, "quantity": quantity, "remainingStock": int >= 0}; returns remainingStock."""
    if type(data) is not dict:
        raise CheckFailed("buy_result", f"expected an object, saw {_describe(data)}")
    if data.get("productName") != name:
        raise CheckFailed("buy_result", "expected productName of the bought product, saw another")
    seen = data.get("quantity")
    if type(seen) is not int or seen != quantity:
        raise CheckFailed("buy_result", f"expected quantity {quantity}, saw {_small(seen)}")
    remaining = data.get("remainingStock")
    if type(remaining) is not int or remaining < 0:
        raise CheckFailed("buy_result", f"expected remainingStock as integer >= 0, saw {_describe(remaining)}")
    return remaining


def parse_insufficient_stock(message: object) -> tuple[int, int] | None:
    """(available, requested) from "... Available: N, Requested: M", or None."""
    match = _INSUFFICIENT.search(message) if type(message) is str else None
    return (int(match[1]), int(match[2])) if match else None


def check_insufficient_stock(error: dict, quantity: int) -> int:
    """An INSUFFICIENT_STOCK answer is plausible: Requested equals the quantity, Available is below it."""
    parsed = parse_insufficient_stock(error["message"])
    if parsed is None:
        raise CheckFailed("buy_result", "expected 'Available: N, Requested: M' in the message, saw other text")
    available, requested = parsed
    if requested != quantity:
        raise CheckFailed("buy_result", f"expected Requested: {quantity}, saw {_small(requested)}")
    if available >= quantity:
        raise CheckFailed("buy_result", "insufficient_stock although available >= requested")
    return available


def success_data(resp: Any, status: int = 200) -> Any:
    """transport, status, content type, JSON, success envelope; returns data."""
    check_transport(resp)
    check_status(resp, status)
    check_content_type(resp)
    return check_success_envelope(json_body(resp))


def error_detail(resp: Any, status: int, code: str | None) -> dict:
    """transport, status, content type, JSON, error envelope with that code; returns the error object."""
    check_transport(resp)
    check_status(resp, status)
    check_content_type(resp)
    return check_error_envelope(json_body(resp), code)


# ---- reporting ----

def _fail(resp: Any, failed: CheckFailed) -> None:
    STATS.validation_failure(failed.check)
    if failed.status is not None:
        STATS.unexpected_status(_request_name(resp), failed.status)
    try:
        resp.failure(failed.reason)
    except Exception:  # used outside a catch_response block: nothing left to mark
        pass


def _validator(on_failure: Any):
    """Turn CheckFailed (and any unexpected exception) into resp.failure() and return on_failure."""
    def decorate(check):
        @functools.wraps(check)
        def run(resp, *args, **kwargs):
            try:
                return check(resp, *args, **kwargs)
            except CheckFailed as failed:
                _fail(resp, failed)
            except Exception as error:
                _fail(resp, CheckFailed("validator", type(error).__name__))
            return on_failure
        return run
    return decorate


# ---- what the tasks call ----

@_validator(False)
def expect_health(resp: Any) -> bool:
    """GET /health: 200 {"status": "ok"} (no envelope)."""
    check_transport(resp)
    check_status(resp, 200)
    check_content_type(resp)
    body = json_body(resp)
    if type(body) is not dict or body.get("status") != "ok":
        raise CheckFailed("health", f'expected {{"status": "ok"}}, saw {_shape(body)}')
    resp.success()
    return True


@_validator(None)
def expect_product_list(resp: Any, category: str | None = None, expect_empty: bool = False) -> list[dict] | None:
    """GET /products or /products/category: valid products, all of `category`; [] when expect_empty."""
    products = check_product_list(success_data(resp))
    if category is not None:
        if expect_empty:
            if products:
                raise CheckFailed("category_filter", f"expected no products for {category!r}, saw some")
            STATS.business_outcome("empty_category")
        else:
            check_category_filter(products, category)
    resp.success()
    return products


@_validator(None)
def expect_product(resp: Any, name: str) -> dict | None:
    """POST /products/details: 200 with the valid product of that name."""
    product = check_product(success_data(resp))
    if product["name"] != name:
        raise CheckFailed("product_details", "expected the requested product, saw another name")
    resp.success()
    return product


@_validator(_BUY_FAILED)
def expect_buy(resp: Any, name: str, quantity: int) -> BuyOutcome:
    """POST /products/buy: ok, or INSUFFICIENT_STOCK with Available < Requested (a business outcome)."""
    check_transport(resp)
    status = resp.status_code
    if status == 200:
        check_content_type(resp)
        remaining = check_buy_result(check_success_envelope(json_body(resp)), name, quantity)
        resp.success()
        STATS.purchase(quantity)
        return BuyOutcome("ok", remaining)
    if status == 400:
        check_content_type(resp)
        error = check_error_envelope(json_body(resp))
        if error["code"] != "INSUFFICIENT_STOCK":
            raise CheckFailed("status", f"expected 200, saw 400 {_code_token(error['code'])}", status=400)
        available = check_insufficient_stock(error, quantity)
        resp.success()
        STATS.business_outcome("insufficient_stock")
        return BuyOutcome("insufficient", None, available)
    code = _error_code_of(resp)
    if status == 404 and code == "RESOURCE_NOT_FOUND":
        _fail(resp, _status_failure(resp, 200, code))  # a failure (products are never deleted), but not applied
        return _BUY_NOT_FOUND
    raise _status_failure(resp, 200, code)


@_validator(False)
def expect_stock_updated(resp: Any) -> bool:
    """PATCH /products/stock: 200 {"message": "Stock updated successfully"}."""
    data = success_data(resp)
    if type(data) is not dict or data.get("message") != STOCK_UPDATED:
        raise CheckFailed("stock_update", f"expected message {STOCK_UPDATED!r}, saw {_shape(data)}")
    resp.success()
    STATS.stock_update()
    return True


@_validator(False)
def expect_error(resp: Any, status: int, code: str | None) -> bool:
    """An error the contract promises: that HTTP status, JSON error envelope with that code."""
    error_detail(resp, status, code)
    resp.success()
    return True


@_validator(False)
def expect_edge_case(resp: Any, case: EdgeCase) -> bool:
    """The outcome test_data promises for this edge case (status and code, or item-count range)."""
    if case.expect_status != 200:
        error_detail(resp, case.expect_status, case.expect_code)
    elif case.expect_items is None:
        success_data(resp)
    else:
        products = check_product_list(success_data(resp))
        category = case.params.get("category") if case.params else None
        if category is not None:
            check_category_filter(products, category)
        low, high = case.expect_items
        if not low <= len(products) <= high:
            seen = "more" if len(products) > high else "fewer"
            raise CheckFailed("item_count", f"expected {low}..{high} items, saw {seen}")
    resp.success()
    return True
