"""Edge cases and invalid payloads: well-formed, and (e2e) answered by the reference service exactly as promised."""
from __future__ import annotations

import re

import pytest
from locust.clients import HttpSession  # first: Locust monkey-patches ssl before requests imports it
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
import requests

import test_data
from loadsuite.runtime.custom_stats import STATS
from test_data import EDGE_CASES, INVALID_BUY_PAYLOADS, INVALID_STOCK_PAYLOADS, PLACEHOLDER, EdgeCase, InvalidPayload
from validators import expect_edge_case, expect_error

LABEL = re.compile(r"[A-Za-z0-9_]+\Z")
CONTRACT_PATHS = {("GET", "/products/category"), ("POST", "/products/details"), ("POST", "/products/buy"),
                  ("PATCH", "/products/stock"), ("GET", "/products"), ("GET", "/health")}
CODES = {"VALIDATION_ERROR", "INSUFFICIENT_STOCK", "RESOURCE_NOT_FOUND", "DATABASE_ERROR", "UNKNOWN_ERROR"}
ALL_PAYLOADS = [("/products/buy", "POST", p) for p in INVALID_BUY_PAYLOADS] + \
               [("/products/stock", "PATCH", p) for p in INVALID_STOCK_PAYLOADS]


def test_edge_cases_are_a_handful():
    assert 10 <= len(EDGE_CASES) <= 20


@pytest.mark.parametrize("cases", [EDGE_CASES, INVALID_BUY_PAYLOADS, INVALID_STOCK_PAYLOADS])
def test_labels_are_unique_and_safe_in_request_names(cases):
    labels = [case.label for case in cases]
    assert len(labels) == len(set(labels))
    assert all(LABEL.match(label) for label in labels), labels


@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda case: case.label)
def test_edge_case_is_well_formed(case: EdgeCase):
    assert (case.method, case.path) in CONTRACT_PATHS
    assert case.json is None or case.body is None
    assert case.needs_product == (PLACEHOLDER in repr((case.json, case.params)))
    assert case.body is None or PLACEHOLDER.encode() not in case.body
    if case.expect_status == 200:
        assert case.expect_code is None
        assert case.expect_items is None or 0 <= case.expect_items[0] <= case.expect_items[1]
    else:
        assert case.expect_status in (400, 404) and case.expect_code in CODES and case.expect_items is None
    if case.path in ("/products/buy", "/products/stock"):
        assert case.expect_status != 200, "an edge case must never change stock"


@pytest.mark.parametrize("path, method, payload", ALL_PAYLOADS, ids=lambda v: getattr(v, "label", str(v)))
def test_invalid_payload_is_well_formed(path, method, payload: InvalidPayload):
    assert payload.expect_status == 400 and payload.expect_code == "VALIDATION_ERROR"
    assert isinstance(payload.payload, (bytes, dict))


def test_render_fills_the_placeholder_without_touching_the_case():
    case = next(case for case in EDGE_CASES if case.label == "buy_quantity_string")
    rendered = case.render("Men's T-Shirt {size}")
    assert rendered.json == {"name": "Men's T-Shirt {size}", "quantity": "1"}
    assert case.json["name"] == PLACEHOLDER
    json_value, params = case.render("x")
    assert params is None and json_value["name"] == "x"


def test_render_without_a_product_name_is_refused():
    case = next(case for case in EDGE_CASES if case.needs_product)
    with pytest.raises(ValueError):
        case.render(None)


def test_request_kwargs_fit_both_clients():
    array = next(case for case in EDGE_CASES if case.body is not None)
    assert array.request_kwargs() == {"data": array.body, "headers": test_data.JSON_HEADERS}
    category = next(case for case in EDGE_CASES if case.params)
    assert category.request_kwargs() == {"params": category.params}
    malformed = next(p for p in INVALID_BUY_PAYLOADS if isinstance(p.payload, bytes))
    assert malformed.request_kwargs("x") == {"data": malformed.payload, "headers": test_data.JSON_HEADERS}
    zero = next(p for p in INVALID_STOCK_PAYLOADS if p.label == "stock_zero")
    assert zero.needs_product and zero.request_kwargs("x") == {"json": {"name": "x", "stock": 0}}


def test_the_invalid_payloads_cover_the_contract_negatives():
    buy = {p.label for p in INVALID_BUY_PAYLOADS}
    stock = {p.label for p in INVALID_STOCK_PAYLOADS}
    assert {"missing_name", "missing_quantity", "quantity_zero", "quantity_negative", "quantity_string",
            "quantity_float", "quantity_bool", "malformed_json"} <= buy
    assert {"missing_name", "missing_stock", "stock_zero", "stock_negative", "stock_string", "stock_float",
            "malformed_json"} <= stock


# ---- against the real reference service ----

def _catalogue(url: str) -> dict[str, dict]:
    answer = requests.get(f"{url}/products", timeout=10)
    answer.raise_for_status()
    return {product["name"]: product for product in answer.json()["data"]}


def _awkward_product(catalogue: dict[str, dict]) -> str:
    """A product whose name needs escaping (apostrophe or colon) when there is one."""
    return next((name for name in sorted(catalogue) if "'" in name or ":" in name), sorted(catalogue)[0])


@pytest.mark.e2e
def test_reference_service_answers_every_case_as_promised(product_service):
    url = product_service.url
    before = _catalogue(url)
    name = _awkward_product(before)
    problems = []
    with requests.Session() as session:
        for case in EDGE_CASES:
            kwargs = case.request_kwargs(name if case.needs_product else None)
            answer = session.request(case.method, url + case.path, timeout=10, **kwargs)
            problems += _mismatches(case.label, answer, case.expect_status, case.expect_code, case.expect_items,
                                    (case.params or {}).get("category"))
        for path, method, payload in ALL_PAYLOADS:
            answer = session.request(method, url + path, timeout=10, **payload.request_kwargs(name))
            problems += _mismatches(f"{path}:{payload.label}", answer, payload.expect_status, payload.expect_code)
    assert not problems, "\n".join(problems)
    assert _catalogue(url) == before, "an edge case or invalid payload changed the catalogue"


def _mismatches(label, answer, status, code, items=None, category=None) -> list[str]:
    body = answer.json()
    seen = f"{label}: got {answer.status_code} {str(body)[:160]}"
    if answer.status_code != status or not answer.headers["Content-Type"].startswith("application/json"):
        return [seen]
    if status != 200:
        return [] if body["status"] == "error" and body["error"]["code"] == code else [seen]
    if items is not None:
        data = body["data"]
        if not items[0] <= len(data) <= items[1] or any(p["category"] != category for p in data):
            return [seen]
    return []


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["fast", "requests"])
def test_validators_accept_the_reference_service_for_every_case(product_service, kind):
    """The same cases through Locust's own clients and validators: nothing is reported as a failure."""
    env = Environment()
    failures = []
    env.events.request.add_listener(
        lambda name, exception=None, **_: exception is not None and failures.append(f"{name}: {exception}"))
    session_class = FastHttpSession if kind == "fast" else HttpSession
    session = session_class(product_service.url, request_event=env.events.request, user=None)
    name = _awkward_product(_catalogue(product_service.url))
    STATS.reset()
    try:
        for case in EDGE_CASES:
            kwargs = case.request_kwargs(name if case.needs_product else None)
            with session.request(case.method, case.path, name=f"Edge_Case_{case.label}", catch_response=True,
                                 **kwargs) as resp:
                expect_edge_case(resp, case)
        for path, method, payload in ALL_PAYLOADS:
            with session.request(method, path, name=f"Invalid_{payload.label}", catch_response=True,
                                 **payload.request_kwargs(name)) as resp:
                expect_error(resp, payload.expect_status, payload.expect_code)
        assert not failures, failures
        assert STATS.validation_failures == {}
    finally:
        STATS.reset()
