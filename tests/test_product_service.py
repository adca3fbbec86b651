"""The reference product-service against its HTTP contract: every row, every quirk, CORS, 404/405, hardening."""
from __future__ import annotations

import http.client
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import ROOT, start_service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CATALOG = json.loads((ROOT / "product_service" / "catalog.json").read_text(encoding="utf-8"))
BY_NAME = {p["name"]: p for p in CATALOG}
CATEGORIES = sorted({p["category"] for p in CATALOG})
ERROR_CODES = {"VALIDATION_ERROR": 400, "INSUFFICIENT_STOCK": 400, "RESOURCE_NOT_FOUND": 404,
               "DATABASE_ERROR": 500, "UNKNOWN_ERROR": 500}
NAME_REQUIRED = "Validation failed: Field 'Name' failed validation on 'required' tag"
INVALID_BODY = "Invalid request body format"
HOSTILE_NAMES = ["'; DROP TABLE products; --", "\" OR 1=1 --", "Robert'); DELETE FROM products;--",
                 "名前 📦 ﷽ \u202eRTL", "nul\u0000byte", "%00%27", "../../etc/passwd", "x" * 256]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)

    def error(self) -> tuple[int, str, str]:
        err = self.json["error"]
        assert self.json["status"] == "error" and set(self.json) == {"status", "error"}
        return self.status, err["code"], err["message"]


def call(port: int, method: str, path: str, payload=None, *, raw: bytes | None = None,
         content_type: str | None = "application/json", headers: dict[str, str] | None = None) -> Reply:
    """One HTTP request on a fresh connection; payload is JSON-encoded unless raw bytes are given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        body = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
        hdrs = dict(headers or {})
        if body is not None and content_type:
            hdrs["Content-Type"] = content_type
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def assert_contract_headers(reply: Reply) -> None:
    assert reply.headers.get("access-control-allow-origin") == "*"
    if reply.body:
        assert reply.headers.get("content-type") == "application/json"
        json.loads(reply.body)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One service for tests that change no stock (each mutating test starts its own)."""
    handle = start_service(tmp_path_factory.mktemp("shared"))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    """A service of its own for the fuzz test, whose random buys and stock updates change stock."""
    handle = start_service(tmp_path_factory.mktemp("fuzz"))
    yield handle
    handle.stop()


def details(port: int, name: str) -> dict:
    reply = call(port, "POST", "/products/details", {"name": name})
    assert reply.status == 200, reply.body
    return reply.json["data"]


# --- GET /health and GET /products -------------------------------------------------------------

def test_health_is_ok_without_envelope(shared):
    reply = call(shared.port, "GET", "/health")
    assert (reply.status, reply.json) == (200, {"status": "ok"})
    assert_contract_headers(reply)


def test_list_products_returns_the_seeded_catalogue(shared):
    reply = call(shared.port, "GET", "/products")
    assert reply.status == 200 and reply.json["status"] == "success"
    assert sorted(reply.json["data"], key=lambda p: p["name"]) == sorted(CATALOG, key=lambda p: p["name"])
    assert_contract_headers(reply)


def test_products_have_exactly_the_contract_fields_and_types(shared):
    for product in call(shared.port, "GET", "/products").json["data"]:
        assert set(product) == {"name", "description", "price", "stock", "category"}
        assert isinstance(product["name"], str) and isinstance(product["description"], str)
        assert isinstance(product["price"], (int, float)) and not isinstance(product["price"], bool)
        assert type(product["stock"]) is int and product["stock"] >= 0


def test_seed_catalogue_has_the_go_shape():
    counts = Counter(p["category"] for p in CATALOG)
    assert set(counts) == {"Books", "Electronics", "Apparel", "Kitchenware", "Furniture"}
    assert len(CATALOG) >= 20 and counts["Books"] >= 6 and counts["Electronics"] >= 4
    assert all(24 <= p["stock"] <= 300 and 9.99 <= p["price"] <= 1500.99 for p in CATALOG)
    for needed in ("Children's Picture Book: The Sleepy Owl", "Cookbook: Global Cuisine", "Men's Classic T-Shirt"):
        assert needed in BY_NAME


# --- GET /products/category --------------------------------------------------------------------

@pytest.mark.parametrize("category", CATEGORIES)
def test_category_lists_exactly_that_category(shared, category):
    reply = call(shared.port, "GET", f"/products/category?category={quote(category)}")
    assert reply.status == 200
    names = sorted(p["name"] for p in reply.json["data"])
    assert names == sorted(p["name"] for p in CATALOG if p["category"] == category)
    assert_contract_headers(reply)


@pytest.mark.parametrize("category", ["NonExistentCategory", "books", "BOOKS", "Books ", "'; DROP TABLE products; --"])
def test_unknown_or_differently_cased_category_is_an_empty_list(shared, category):
    reply = call(shared.port, "GET", f"/products/category?category={quote(category)}")
    assert (reply.status, reply.json) == (200, {"status": "success", "data": []})


@pytest.mark.parametrize("query", ["", "?category=", "?other=Books", "?Category=Books"])
def test_missing_or_empty_category_is_a_validation_error(shared, query):
    reply = call(shared.port, "GET", f"/products/category{query}")
    assert reply.error() == (400, "VALIDATION_ERROR", "Missing 'category' query parameter")
    assert_contract_headers(reply)


def test_overlong_category_is_a_validation_error(shared):
    reply = call(shared.port, "GET", "/products/category?category=" + "c" * 257)
    status, code, _ = reply.error()
    assert (status, code) == (400, "VALIDATION_ERROR")
    assert call(shared.port, "GET", "/products/category?category=" + "c" * 256).json["data"] == []


# --- POST /products/details --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Children's Picture Book: The Sleepy Owl", "Cookbook: Global Cuisine",
                                  "Men's Classic T-Shirt"])
def test_details_returns_the_product_with_escaped_names(shared, name):
    reply = call(shared.port, "POST", "/products/details", {"name": name})
    assert reply.status == 200 and reply.json == {"status": "success", "data": BY_NAME[name]}
    assert_contract_headers(reply)


def test_details_of_unknown_product_is_not_found(shared):
    reply = call(shared.port, "POST", "/products/details", {"name": "No Such Thing"})
    assert reply.error() == (404, "RESOURCE_NOT_FOUND", "Product with name 'No Such Thing' not found")


def test_details_name_is_case_sensitive(shared):
    assert call(shared.port, "POST", "/products/details", {"name": "cookbook: global cuisine"}).status == 404


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": None}, {"other": "Cookbook: Global Cuisine"}])
def test_details_without_name_is_name_required(shared, payload):
    assert call(shared.port, "POST", "/products/details", payload).error() == (400, "VALIDATION_ERROR", NAME_REQUIRED)


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"[]", b'["name"]', b'"Cookbook: Global Cuisine"', b"42",
                                 b"null", b'{"name": 5}', b'{"name": ["a"]}', b'{"name": {"x": 1}}', b'{"name": true}',
                                 b'{"name": "a"} trailing', b'{"name": NaN}', b"\xef\xbb\xbf{}"])
def test_details_with_unparsable_body_is_invalid_format(shared, raw):
    assert call(shared.port, "POST", "/products/details", raw=raw).error() == (400, "VALIDATION_ERROR", INVALID_BODY)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_body_that_is_not_declared_json_is_invalid_format(shared, content_type):
    reply = call(shared.port, "POST", "/products/details", {"name": "Cookbook: Global Cuisine"},
                 content_type=content_type)
    assert reply.error() == (400, "VALIDATION_ERROR", INVALID_BODY)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON",
                                          "application/vnd.api+json"])
def test_json_media_types_with_parameters_are_accepted(shared, content_type):
    reply = call(shared.port, "POST", "/products/details", {"name": "Cookbook: Global Cuisine"},
                 content_type=content_type)
    assert reply.status == 200


def test_field_names_match_case_insensitively_like_go(shared):
    assert call(shared.port, "POST", "/products/details", {"Name": "Cookbook: Global Cuisine"}).status == 200


# --- PATCH /products/stock ---------------------------------------------------------------------

def test_stock_update_sets_exactly_that_value(product_service):
    reply = call(product_service.port, "PATCH", "/products/stock", {"name": "Men's Classic T-Shirt", "stock": 7})
    assert (reply.status, reply.json) == (200, {"status": "success", "data": {"message": "Stock updated successfully"}})
    assert_contract_headers(reply)
    assert details(product_service.port, "Men's Classic T-Shirt")["stock"] == 7
    listed = {p["name"]: p["stock"] for p in call(product_service.port, "GET", "/products").json["data"]}
    assert listed["Men's Classic T-Shirt"] == 7
    apparel = call(product_service.port, "GET", "/products/category?category=Apparel").json["data"]
    assert {p["name"]: p["stock"] for p in apparel}["Men's Classic T-Shirt"] == 7


def test_stock_update_of_unknown_product_is_not_found(shared):
    reply = call(shared.port, "PATCH", "/products/stock", {"name": "Ghost", "stock": 3})
    assert reply.error() == (404, "RESOURCE_NOT_FOUND", "Product with name 'Ghost' not found")


@pytest.mark.parametrize("payload, message", [
    ({"name": "Cookbook: Global Cuisine", "stock": 0}, "Validation failed: Field 'Stock' failed validation on 'required' tag"),
    ({"name": "Cookbook: Global Cuisine"}, "Validation failed: Field 'Stock' failed validation on 'required' tag"),
    ({"name": "Cookbook: Global Cuisine", "stock": None}, "Validation failed: Field 'Stock' failed validation on 'required' tag"),
    ({"name": "Cookbook: Global Cuisine", "stock": -1}, "Validation failed: Field 'Stock' failed validation on 'gte' tag"),
    ({"name": "", "stock": 5}, NAME_REQUIRED),
    ({"stock": 5}, NAME_REQUIRED),
    ({"name": "", "stock": -5}, NAME_REQUIRED),
    ({"name": "Cookbook: Global Cuisine", "stock": "5"}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "stock": 5.5}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "stock": 5.0}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "stock": True}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "stock": 2**63}, INVALID_BODY),
    ({"name": "", "stock": "5"}, INVALID_BODY),
    ({"name": 5, "stock": 5}, INVALID_BODY),
])
def test_invalid_stock_updates_are_rejected_and_change_nothing(shared, payload, message):
    assert call(shared.port, "PATCH", "/products/stock", payload).error() == (400, "VALIDATION_ERROR", message)
    assert details(shared.port, "Cookbook: Global Cuisine")["stock"] == BY_NAME["Cookbook: Global Cuisine"]["stock"]


# --- POST /products/buy ------------------------------------------------------------------------

def test_buy_returns_remaining_stock_and_lowers_it(product_service):
    name = "Children's Picture Book: The Sleepy Owl"
    before = BY_NAME[name]["stock"]
    reply = call(product_service.port, "POST", "/products/buy", {"name": name, "quantity": 3})
    assert reply.status == 200
    assert reply.json == {"status": "success", "data": {"productName": name, "quantity": 3, "remainingStock": before - 3}}
    assert_contract_headers(reply)
    assert details(product_service.port, name)["stock"] == before - 3


def test_buy_of_the_whole_stock_leaves_zero(product_service):
    name = "Oak Dining Table"
    stock = BY_NAME[name]["stock"]
    reply = call(product_service.port, "POST", "/products/buy", {"name": name, "quantity": stock})
    assert reply.json["data"]["remainingStock"] == 0 and details(product_service.port, name)["stock"] == 0


def test_buy_beyond_stock_is_insufficient_stock_and_changes_nothing(shared):
    name = "Cookbook: Global Cuisine"
    stock = BY_NAME[name]["stock"]
    reply = call(shared.port, "POST", "/products/buy", {"name": name, "quantity": stock + 1})
    assert reply.error() == (400, "INSUFFICIENT_STOCK",
                             f"Insufficient stock for product '{name}'. Available: {stock}, Requested: {stock + 1}")
    assert_contract_headers(reply)
    assert details(shared.port, name)["stock"] == stock


def test_buy_of_unknown_product_is_not_found(shared):
    reply = call(shared.port, "POST", "/products/buy", {"name": "Ghost", "quantity": 1})
    assert reply.error() == (404, "RESOURCE_NOT_FOUND", "Product with name 'Ghost' not found")


@pytest.mark.parametrize("payload, message", [
    ({"name": "Cookbook: Global Cuisine", "quantity": 0}, "Validation failed: Field 'Quantity' failed validation on 'required' tag"),
    ({"name": "Cookbook: Global Cuisine"}, "Validation failed: Field 'Quantity' failed validation on 'required' tag"),
    ({"name": "Cookbook: Global Cuisine", "quantity": -1}, "Validation failed: Field 'Quantity' failed validation on 'gt' tag"),
    ({"name": "Cookbook: Global Cuisine", "quantity": -(2**63)}, "Validation failed: Field 'Quantity' failed validation on 'gt' tag"),
    ({"quantity": 1}, NAME_REQUIRED),
    ({"name": "", "quantity": 0}, NAME_REQUIRED),
    ({"name": "Cookbook: Global Cuisine", "quantity": "1"}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "quantity": 1.5}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "quantity": True}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "quantity": [1]}, INVALID_BODY),
    ({"name": "Cookbook: Global Cuisine", "quantity": 10**30}, INVALID_BODY),
])
def test_invalid_buys_are_rejected_and_change_nothing(shared, payload, message):
    assert call(shared.port, "POST", "/products/buy", payload).error() == (400, "VALIDATION_ERROR", message)
    assert details(shared.port, "Cookbook: Global Cuisine")["stock"] == BY_NAME["Cookbook: Global Cuisine"]["stock"]


# --- unknown paths, wrong methods, HEAD, OPTIONS -----------------------------------------------

@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("GET", "/"), ("POST", "/products/nonexistent"),
                                          ("GET", "/products/"), ("GET", "/PRODUCTS"), ("DELETE", "/api/v1/x"),
                                          ("GET", "/products/details/extra")])
def test_unknown_path_is_404_with_the_error_envelope(shared, method, path):
    reply = call(shared.port, method, path)
    assert reply.error() == (404, "RESOURCE_NOT_FOUND", f"Cannot {method} {path}")
    assert_contract_headers(reply)


@pytest.mark.parametrize("method, path, allowed", [
    ("POST", "/products", "GET, HEAD, OPTIONS"), ("DELETE", "/products", "GET, HEAD, OPTIONS"),
    ("GET", "/products/buy", "POST, OPTIONS"), ("PUT", "/products/stock", "PATCH, OPTIONS"),
    ("GET", "/products/details", "POST, OPTIONS"), ("POST", "/health", "GET, HEAD, OPTIONS"),
    ("PATCH", "/products/category", "GET, HEAD, OPTIONS"),
])
def test_wrong_method_on_known_path_is_405_with_allow_header(shared, method, path, allowed):
    reply = call(shared.port, method, path)
    status, code, message = reply.error()
    assert (status, code) == (405, "VALIDATION_ERROR")
    assert method in message and path in message
    assert reply.headers["allow"] == allowed
    assert_contract_headers(reply)


def test_head_answers_the_get_headers_without_a_body(shared):
    reply = call(shared.port, "HEAD", "/products")
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path, methods", [("/products/buy", "POST"), ("/products/stock", "PATCH"),
                                           ("/products", "GET")])
def test_cors_preflight_on_known_path_allows_any_origin(shared, path, methods):
    reply = call(shared.port, "OPTIONS", path, headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": methods,
        "Access-Control-Request-Headers": "content-type"})
    assert reply.status == 204 and reply.body == b""
    assert reply.headers["access-control-allow-origin"] == "*"
    assert methods in reply.headers["access-control-allow-methods"]
    assert "content-type" in reply.headers["access-control-allow-headers"].lower()


def test_cors_preflight_on_unknown_path_is_404(shared):
    assert call(shared.port, "OPTIONS", "/nope").error()[:2] == (404, "RESOURCE_NOT_FOUND")


# --- hardening ---------------------------------------------------------------------------------

def test_body_above_64_kib_is_413_with_the_error_envelope(shared):
    raw = json.dumps({"name": "Cookbook: Global Cuisine", "quantity": 1, "pad": "x" * 70000}).encode()
    reply = call(shared.port, "POST", "/products/buy", raw=raw)
    assert reply.error() == (413, "VALIDATION_ERROR", "Request body too large (limit 65536 bytes)")
    assert_contract_headers(reply)
    assert details(shared.port, "Cookbook: Global Cuisine")["stock"] == BY_NAME["Cookbook: Global Cuisine"]["stock"]


def test_chunked_body_above_64_kib_is_413(shared):
    conn = http.client.HTTPConnection("127.0.0.1", shared.port, timeout=15)
    try:
        conn.request("POST", "/products/details", body=iter([b'{"name": "' + b"x" * 40000, b"y" * 40000 + b'"}']),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
    assert reply.error()[:2] == (413, "VALIDATION_ERROR")


def test_body_of_exactly_64_kib_is_accepted(shared):
    head = json.dumps({"name": "Cookbook: Global Cuisine"}).encode()
    raw = head + b" " * (65536 - len(head))
    assert len(raw) == 65536
    assert call(shared.port, "POST", "/products/details", raw=raw).status == 200


@pytest.mark.parametrize("path, payload", [
    ("/products/details", {"name": "n" * 257}), ("/products/buy", {"name": "n" * 257, "quantity": 1}),
    ("/products/stock", {"name": "n" * 257, "stock": 1})])
def test_name_longer_than_256_characters_is_a_validation_error(shared, path, payload):
    method = "PATCH" if path.endswith("stock") else "POST"
    reply = call(shared.port, method, path, payload)
    assert reply.error() == (400, "VALIDATION_ERROR", "Validation failed: Field 'Name' failed validation on 'max' tag")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_plain_unknown_products_and_the_table_survives(shared, name):
    for method, path, payload in [("POST", "/products/details", {"name": name}),
                                  ("POST", "/products/buy", {"name": name, "quantity": 1}),
                                  ("PATCH", "/products/stock", {"name": name, "stock": 5})]:
        reply = call(shared.port, method, path, payload)
        status, code, message = reply.error()
        assert (status, code) == (404, "RESOURCE_NOT_FOUND")
        assert message == f"Product with name '{name}' not found"
    category = call(shared.port, "GET", f"/products/category?category={quote(name)}")
    assert category.status == 200 and category.json["data"] == []
    assert len(call(shared.port, "GET", "/products").json["data"]) == len(CATALOG)


@pytest.mark.parametrize("raw", [b'{"name": "\\ud800 lone surrogate"}', b'{"name": "\xff\xfe invalid utf8"}',
                                 b"[" * 50000 + b"]" * 50000, b'{"name": "x", "quantity": 1' + b"0" * 5000 + b"}",
                                 b'{"name": "x", "quantity": 1e999}', b'{"name": "x", "quantity": -Infinity}',
                                 b"\x00\x01\x02", b'{"name": "Cookbook: Global Cuisine", "quantity": 1, "name": 7}'])
def test_malformed_bodies_never_cause_a_500(shared, raw):
    for method, path in [("POST", "/products/details"), ("POST", "/products/buy"), ("PATCH", "/products/stock")]:
        reply = call(shared.port, method, path, raw=raw)
        assert reply.status in (400, 404, 413), reply.body
        assert reply.json["status"] == "error"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
bodies = st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.sampled_from(list(BY_NAME)), st.text(max_size=300), json_values),
    "quantity": st.one_of(st.integers(), json_values), "stock": st.one_of(st.integers(), json_values)}))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, route=st.sampled_from([("POST", "/products/details"), ("POST", "/products/buy"),
                                           ("PATCH", "/products/stock")]))
def test_any_json_body_gets_a_contract_answer_and_never_a_500(fuzz_target, body, route):
    reply = call(fuzz_target.port, route[0], route[1], body)
    assert reply.status in (200, 400, 404), reply.body
    assert_contract_headers(reply)
    if reply.status != 200:
        status, code, _ = reply.error()
        assert ERROR_CODES[code] == status


def test_every_answer_carries_cors_and_json_content_type(shared):
    requests = [("GET", "/health", None), ("GET", "/products", None), ("GET", "/products/category?category=Books", None),
                ("GET", "/products/category", None), ("POST", "/products/details", {"name": "Ghost"}),
                ("POST", "/products/details", {"name": "Cookbook: Global Cuisine"}),
                ("POST", "/products/buy", {"name": "Ghost", "quantity": 1}),
                ("POST", "/products/buy", {"name": "Cookbook: Global Cuisine", "quantity": 10**6}),
                ("PATCH", "/products/stock", {"name": "Ghost", "stock": 1}), ("GET", "/nope", None),
                ("DELETE", "/products", None), ("OPTIONS", "/products", None)]
    for method, path, payload in requests:
        assert_contract_headers(call(shared.port, method, path, payload))


def test_database_rows_stay_intact_after_hostile_traffic(shared):
    for name in HOSTILE_NAMES:
        call(shared.port, "POST", "/products/buy", {"name": name, "quantity": 1})
    with sqlite3.connect(Path(shared.db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM products").fetchone()[0] == len(CATALOG)
