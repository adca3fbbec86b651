"""Contract checks for Locust responses: each task hands its response to one `expect_*` call.

Works with both Locust clients (FastHttpUser's geventhttpclient responses and HttpUser's
requests responses) inside `with client.<method>(..., name=..., catch_response=True) as resp:`.
An `expect_*` call marks the request: `resp.success()` when the response is what the contract
promises (including expected business outcomes such as INSUFFICIENT_STOCK), otherwise
`resp.failure("<check>: expected <what>, saw <what>")`. Locust groups failures by that text, so
it never carries per-request values (product names, stock levels, timestamps). Every failure is
also counted in the custom stats (loadsuite/runtime/custom_stats.py); a check never raises out of a task.

The small `check_*` functions (loadsuite/contract/checks.py) raise CheckFailed and compose into new `expect_*` calls.
Hot path: one JSON parse per response at most (orjson when installed, the standard parser only when
orjson refuses a body, so both accept and reject exactly the same bodies), precompiled patterns, no
logging, and a product check that computes a failure text only for the product that fails.
"""
from __future__ import annotations
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from loadsuite.contract.checks import (JSON, STOCK_UPDATED, BuyOutcome, CheckFailed, _BUY_FAILED, _BUY_NOT_FOUND,
                                       _code_token, _error_code_of, _request_name, _shape, _status_failure,
                                       check_buy_result, check_catalogue, check_category_filter, check_content_type,
                                       check_error_envelope, check_insufficient_stock, check_product,
                                       check_product_list, check_same_product, check_status, check_success_envelope,
                                       check_transport, error_detail, json_body, parse_insufficient_stock,
                                       success_data)
from loadsuite.runtime.custom_stats import STATS

if TYPE_CHECKING:
    from test_data import EdgeCase

__all__ = ["JSON", "STOCK_UPDATED", "BuyOutcome", "CheckFailed", "check_buy_result", "check_catalogue",
           "check_same_product", "check_category_filter",
           "check_content_type", "check_error_envelope", "check_insufficient_stock", "check_product",
           "check_product_list", "check_status", "check_success_envelope", "check_transport", "error_detail",
           "json_body", "parse_insufficient_stock", "success_data", "expect_health", "expect_product_list",
           "expect_product", "expect_buy", "expect_stock_updated", "expect_error", "expect_edge_case"]


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
def expect_product_list(resp: Any, category: str | None = None, expect_empty: bool = False,
                        known: dict[str, dict] | None = None) -> list[dict] | None:
    """GET /products or /products/category: valid products, all of `category`; [] when expect_empty; and every
    product the target listed here before (`known`) again, unchanged but for its stock."""
    products = check_product_list(success_data(resp))
    if category is not None:
        if expect_empty:
            if products:
                raise CheckFailed("category_filter", f"expected no products for {category!r}, saw some")
            STATS.business_outcome("empty_category")
        else:
            check_category_filter(products, category)
    if known:
        check_catalogue(products, known)
    resp.success()
    return products


@_validator(None)
def expect_product(resp: Any, name: str, known: dict | None = None) -> dict | None:
    """POST /products/details: 200 with the valid product of that name, as the listings showed it (`known`)."""
    product = check_product(success_data(resp))
    if product["name"] != name:
        raise CheckFailed("product_details", "expected the requested product, saw another name")
    check_same_product(product, known)
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
