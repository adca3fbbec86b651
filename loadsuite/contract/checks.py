"""The contract's checks: each `check_*` raises CheckFailed (a short, low-cardinality reason) or returns what it validated.

Works with both Locust clients (geventhttpclient and requests responses). Hot path: one JSON parse per
response at most (orjson, the standard parser only when orjson refuses a body, so both accept and reject
exactly the same bodies), precompiled patterns, no logging. Exception types are recognised by class name
so this module imports neither requests nor urllib3 (both import ssl, which must follow Locust's gevent
monkey-patching).
"""
from __future__ import annotations

import json
import re
from typing import Any, Literal, NamedTuple

from ..transport.headers import header
from .schemas import describe, product_problem, valid_product

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

_describe = describe


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
    for cause in chain:  # the bounded body reader refused the answer (loadsuite/transport/bodies.py)
        if getattr(cause, "answer_too_large", False):
            return CheckFailed("too_large", str(cause))
    root = chain[-1]
    if any(_is_explicit_timeout(type(e)) for e in chain) or _is_root_timeout(type(root)):
        return CheckFailed("timeout", "no response within the request timeout")
    return CheckFailed("connection", type(root).__name__)


# ---- the individual checks: each raises CheckFailed or returns what it validated ----

def check_transport(resp: Any) -> None:
    """A response arrived (status 0 means the connection failed or timed out)."""
    if not resp.status_code:
        raise _transport_failure(getattr(resp, "error", None))


def _body_refused(resp: Any) -> BaseException | None:
    """The error FastHttpUser recorded while it read the body, before any check ran, when the bounded reader
    refused it as too large: the body the checks would see is then empty."""
    meta = getattr(resp, "request_meta", None)
    error = meta.get("exception") if meta else None
    return error if getattr(error, "answer_too_large", False) else None


def json_body(resp: Any) -> Any:
    """The parsed JSON body (parse once; pass the result on to the other checks)."""
    refused = _body_refused(resp)
    if refused is not None:
        raise _transport_failure(refused)
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
    announced = header(headers, "Content-Length")
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
    value = header(resp.headers, "Content-Type")
    if value == JSON:
        return
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


def check_product(product: Any) -> dict:
    """name non-empty str, description str, price number >= 0, stock int >= 0, category str (bools rejected)."""
    if not valid_product(product):
        raise CheckFailed("product_schema", product_problem(product) or "expected a valid product")
    return product


def check_product_list(data: Any) -> list[dict]:
    """A list of valid products with unique names."""
    if type(data) is not list:
        raise CheckFailed("product_list", f"expected a list, saw {_describe(data)}")
    if not all(map(valid_product, data)):
        for product in data:
            problem = product_problem(product)
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
