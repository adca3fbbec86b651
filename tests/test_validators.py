"""Every validator, passing and failing, through real Locust sessions of both clients.

A gevent WSGI server on a free port answers canned responses; requests go through Locust's
FastHttpSession (FastHttpUser) and HttpSession (HttpUser) with catch_response=True, and the
tests assert what Locust recorded: success, or a failure grouped under the validator's reason.
"""
from __future__ import annotations

import json

import gevent
import pytest
from gevent.pywsgi import WSGIServer
from locust.clients import HttpSession
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment

import validators
from loadsuite.runtime.custom_stats import STATS
from test_data import EdgeCase
from tests.conftest import free_port
from validators import (BuyOutcome, expect_buy, expect_edge_case, expect_error, expect_health, expect_product,
                        expect_product_list, expect_stock_updated, parse_insufficient_stock)

NAME = "Children's Picture Book: Colours"
BOOK = {"name": NAME, "description": "A book", "price": 12.5, "stock": 7, "category": "Books"}
LAMP = {"name": "Desk Lamp", "description": "", "price": 30, "stock": 0, "category": "Furniture"}
TIMEOUT = 0.3


def success(data) -> bytes:
    return json.dumps({"status": "success", "data": data}).encode()


def error(code: str, message: str = "something") -> bytes:
    return json.dumps({"status": "error", "error": {"code": code, "message": message}}).encode()


def insufficient(available: int, requested: int) -> bytes:
    return error("INSUFFICIENT_STOCK",
                 f"Insufficient stock for product '{NAME}'. Available: {available}, Requested: {requested}")


class CannedServer:
    """Answers each path with the (status, content type, body) registered for it; /slow never answers in time."""

    def __init__(self) -> None:
        self.responses: dict[str, tuple[int, str | None, bytes]] = {}
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None, error_log=None)

    def app(self, environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/slow":
            gevent.sleep(TIMEOUT * 5)
        status, content_type, body = self.responses.get(path, (404, "text/plain", b"no canned response"))
        headers = [("Content-Length", str(len(body)))]
        if content_type:
            headers.append(("Content-Type", content_type))
        start_response(f"{status} X", headers)
        return [body]

    def put(self, path: str, status: int, body: bytes, content_type: str | None = "application/json") -> str:
        self.responses[path] = (status, content_type, body)
        return path


@pytest.fixture(scope="module")
def server():
    canned = CannedServer()
    canned.server.start()
    yield canned
    canned.server.stop(timeout=1)


class Client:
    """One Locust session plus what Locust recorded for the last request."""

    def __init__(self, kind: str, base_url: str) -> None:
        self.kind = kind
        self.env = Environment()
        self.env.create_local_runner()  # wires request events into env.stats like a real run
        self.events: list[dict] = []
        self.env.events.request.add_listener(lambda **event: self.events.append(event))
        if kind == "fast":
            self.session = FastHttpSession(base_url, request_event=self.env.events.request, user=None,
                                           network_timeout=TIMEOUT, connection_timeout=TIMEOUT, max_retries=0)
        else:
            self.session = HttpSession(base_url, request_event=self.env.events.request, user=None)

    def run(self, path: str, check, *args, method: str = "GET", name: str = "Test_Request", **kwargs):
        """Request path inside catch_response, hand the response to check; return (result, failure text or None)."""
        if self.kind == "requests":
            kwargs.setdefault("timeout", TIMEOUT)
        with self.session.request(method, path, name=name, catch_response=True, **kwargs) as resp:
            result = check(resp, *args)
        exception = self.events[-1]["exception"]
        return result, (None if exception is None else str(exception))


@pytest.fixture(params=["fast", "requests"])
def client(request, server):
    return Client(request.param, f"http://127.0.0.1:{server.server.server_port}")


@pytest.fixture(autouse=True)
def _fresh_stats():
    STATS.reset()
    yield
    STATS.reset()


# ---- health ----

def test_health_ok_is_success(client, server):
    path = server.put("/health", 200, b'{"status": "ok"}')
    assert client.run(path, expect_health) == (True, None)


def test_health_with_html_is_content_type_failure(client, server):
    path = server.put("/health-html", 200, b"<html>ok</html>", "text/html; charset=utf-8")
    assert client.run(path, expect_health) == (False, "content_type: expected application/json, saw text/html")
    assert STATS.validation_failures == {"content_type": 1}


def test_health_without_content_type_names_none(client, server):
    path = server.put("/health-bare", 200, b'{"status": "ok"}', None)
    assert client.run(path, expect_health)[1] == "content_type: expected application/json, saw none"


def test_health_wrong_body_fails(client, server):
    path = server.put("/health-down", 200, b'{"status": "down"}')
    assert client.run(path, expect_health) == (False, 'health: expected {"status": "ok"}, saw keys [status]')


def test_content_type_with_charset_is_accepted(client, server):
    path = server.put("/health-charset", 200, b'{"status": "ok"}', "Application/JSON; charset=utf-8")
    assert client.run(path, expect_health) == (True, None)


# ---- product lists ----

def test_product_list_returns_products(client, server):
    path = server.put("/products", 200, success([BOOK, LAMP]))
    products, failure = client.run(path, expect_product_list)
    assert failure is None
    assert [p["name"] for p in products] == [NAME, "Desk Lamp"]


def test_category_list_with_only_that_category_passes(client, server):
    path = server.put("/books", 200, success([BOOK]))
    products, failure = client.run(path, expect_product_list, "Books")
    assert failure is None and products == [BOOK]


def test_category_list_with_other_categories_fails(client, server):
    path = server.put("/books-mixed", 200, success([BOOK, LAMP]))
    assert client.run(path, expect_product_list, "Books") == (
        None, "category_filter: expected only 'Books', saw other categories")


def test_empty_category_is_a_business_outcome(client, server):
    path = server.put("/empty", 200, success([]))
    assert client.run(path, expect_product_list, "NonExistentCategory", True) == ([], None)
    assert STATS.business_outcomes == {"empty_category": 1}
    assert STATS.validation_failures == {}


def test_expected_empty_category_with_products_fails(client, server):
    path = server.put("/not-empty", 200, success([BOOK]))
    result, failure = client.run(path, expect_product_list, "NonExistentCategory", True)
    assert result is None
    assert failure == "category_filter: expected no products for 'NonExistentCategory', saw some"
    assert STATS.business_outcomes == {}


@pytest.mark.parametrize("field, value, reason", [
    ("price", True, "product_schema: expected price as number >= 0, saw bool"),
    ("price", "9.99", "product_schema: expected price as number >= 0, saw str"),
    ("price", -1.5, "product_schema: expected price as number >= 0, saw negative number"),
    ("stock", 2.0, "product_schema: expected stock as integer >= 0, saw float"),
    ("stock", -3, "product_schema: expected stock as integer >= 0, saw negative number"),
    ("stock", False, "product_schema: expected stock as integer >= 0, saw bool"),
    ("name", "", "product_schema: expected name as non-empty string, saw empty string"),
    ("category", None, "product_schema: expected category as string, saw null or missing"),
    ("description", 5, "product_schema: expected description as string, saw int"),
])
def test_product_schema_violations_are_named(client, server, field, value, reason):
    broken = {**LAMP, field: value}
    path = server.put(f"/schema-{field}-{value!r}", 200, success([BOOK, broken]))
    assert client.run(path, expect_product_list) == (None, reason)


def test_missing_product_field_fails(client, server):
    broken = {key: value for key, value in BOOK.items() if key != "stock"}
    path = server.put("/schema-missing", 200, success([broken]))
    assert client.run(path, expect_product_list)[1] == "product_schema: expected stock as integer >= 0, saw null or missing"


def test_duplicate_names_fail(client, server):
    path = server.put("/dupes", 200, success([BOOK, dict(BOOK)]))
    assert client.run(path, expect_product_list)[1] == "product_list: expected unique names, saw duplicates"


def test_data_not_a_list_fails(client, server):
    path = server.put("/not-list", 200, success({"items": []}))
    assert client.run(path, expect_product_list)[1] == "product_list: expected a list, saw dict"


def test_success_status_without_envelope_fails(client, server):
    path = server.put("/bare-list", 200, json.dumps([BOOK]).encode())
    assert client.run(path, expect_product_list)[1] == "envelope: expected status=success with data, saw list"


def test_error_envelope_with_200_fails(client, server):
    path = server.put("/error-200", 200, error("DATABASE_ERROR"))
    assert client.run(path, expect_product_list)[1] == "envelope: expected status=success with data, saw status=error"


def test_unexpected_keys_are_listed_without_values(client, server):
    path = server.put("/odd-keys", 200, b'{"result": "x", "items": [1]}')
    assert client.run(path, expect_product_list)[1] == "envelope: expected status=success with data, saw keys [items, result]"


def test_server_error_names_status_and_code_and_counts_it(client, server):
    path = server.put("/boom", 500, error("UNKNOWN_ERROR", "An internal server error occurred."))
    assert client.run(path, expect_product_list, name="Get_All_Products") == (
        None, "status: expected 200, saw 500 UNKNOWN_ERROR")
    assert STATS.unexpected_statuses == {"Get_All_Products 500": 1}
    assert STATS.validation_failures == {"status": 1}


def test_bad_gateway_without_json_names_only_status(client, server):
    path = server.put("/gateway", 502, b"<html>bad gateway</html>", "text/html")
    assert client.run(path, expect_product_list)[1] == "status: expected 200, saw 502"


def test_invalid_json_fails(client, server):
    path = server.put("/truncated", 200, b'{"status": "success", "data": [')
    assert client.run(path, expect_product_list)[1] == "json: expected a JSON body, saw invalid JSON"


def test_nan_is_not_json(client, server):
    path = server.put("/nan", 200, b'{"status": "success", "data": [{"price": NaN}]}')
    assert client.run(path, expect_product_list)[1] == "json: expected a JSON body, saw invalid JSON"


def test_empty_body_fails(client, server):
    path = server.put("/empty-body", 200, b"")
    assert client.run(path, expect_product_list)[1] == "json: expected a JSON body, saw an empty body"


def test_failures_are_grouped_by_reason_in_locust_stats(client, server):
    path = server.put("/boom-grouped", 500, error("DATABASE_ERROR"))
    for _ in range(3):
        client.run(path, expect_product_list, name="Get_All_Products")
    errors = list(client.env.stats.errors.values())
    assert len(errors) == 1 and errors[0].occurrences == 3
    assert "status: expected 200, saw 500 DATABASE_ERROR" in errors[0].to_name()
    assert client.env.stats.get("Get_All_Products", "GET").num_failures == 3


# ---- details ----

def test_details_of_requested_product_passes(client, server):
    path = server.put("/details", 200, success(BOOK))
    assert client.run(path, expect_product, NAME, method="POST", json={"name": NAME}) == (BOOK, None)


def test_details_of_another_product_fails_without_naming_it(client, server):
    path = server.put("/details-other", 200, success(LAMP))
    result, failure = client.run(path, expect_product, NAME, method="POST")
    assert result is None
    assert failure == "product_details: expected the requested product, saw another name"


def test_details_not_found_is_a_status_failure(client, server):
    path = server.put("/details-404", 404, error("RESOURCE_NOT_FOUND", f"Product with name '{NAME}' not found"))
    assert client.run(path, expect_product, NAME, method="POST")[1] == "status: expected 200, saw 404 RESOURCE_NOT_FOUND"


# ---- buy ----

def test_successful_buy_is_ok_and_counted(client, server):
    path = server.put("/buy", 200, success({"productName": NAME, "quantity": 2, "remainingStock": 5}))
    assert client.run(path, expect_buy, NAME, 2, method="POST") == (BuyOutcome("ok", 5, None), None)
    assert (STATS.purchases, STATS.units_sold) == (1, 2)


def test_buy_echoing_another_quantity_fails(client, server):
    path = server.put("/buy-qty", 200, success({"productName": NAME, "quantity": 3, "remainingStock": 5}))
    assert client.run(path, expect_buy, NAME, 2, method="POST") == (
        BuyOutcome("failed"), "buy_result: expected quantity 2, saw 3")
    assert STATS.purchases == 0


def test_buy_echoing_another_product_fails(client, server):
    path = server.put("/buy-name", 200, success({"productName": "Desk Lamp", "quantity": 1, "remainingStock": 5}))
    assert client.run(path, expect_buy, NAME, 1, method="POST")[1] == (
        "buy_result: expected productName of the bought product, saw another")


def test_buy_with_negative_remaining_stock_fails(client, server):
    path = server.put("/buy-negative", 200, success({"productName": NAME, "quantity": 1, "remainingStock": -1}))
    assert client.run(path, expect_buy, NAME, 1, method="POST")[1] == (
        "buy_result: expected remainingStock as integer >= 0, saw negative number")


def test_insufficient_stock_below_requested_is_a_business_outcome(client, server):
    path = server.put("/buy-short", 400, insufficient(available=1, requested=3))
    assert client.run(path, expect_buy, NAME, 3, method="POST") == (BuyOutcome("insufficient", None, 1), None)
    assert STATS.business_outcomes == {"insufficient_stock": 1}
    assert STATS.snapshot()["insufficient_stock"] == 1
    assert STATS.validation_failures == {}


def test_insufficient_stock_although_enough_is_a_failure(client, server):
    path = server.put("/buy-wrong-short", 400, insufficient(available=5, requested=3))
    assert client.run(path, expect_buy, NAME, 3, method="POST") == (
        BuyOutcome("failed"), "buy_result: insufficient_stock although available >= requested")
    assert STATS.business_outcomes == {}


def test_insufficient_stock_for_another_quantity_is_a_failure(client, server):
    path = server.put("/buy-other-qty", 400, insufficient(available=0, requested=4))
    assert client.run(path, expect_buy, NAME, 3, method="POST")[1] == "buy_result: expected Requested: 3, saw 4"


def test_insufficient_stock_with_unparsable_message_fails(client, server):
    path = server.put("/buy-garbled", 400, error("INSUFFICIENT_STOCK", "not enough"))
    assert client.run(path, expect_buy, NAME, 3, method="POST")[1] == (
        "buy_result: expected 'Available: N, Requested: M' in the message, saw other text")


def test_buy_validation_error_is_failed(client, server):
    path = server.put("/buy-invalid", 400, error("VALIDATION_ERROR"))
    assert client.run(path, expect_buy, NAME, 1, method="POST", name="Buy_Product") == (
        BuyOutcome("failed"), "status: expected 200, saw 400 VALIDATION_ERROR")
    assert STATS.unexpected_statuses == {"Buy_Product 400": 1}


def test_buy_not_found_is_reported_and_distinguished(client, server):
    path = server.put("/buy-gone", 404, error("RESOURCE_NOT_FOUND", f"Product with name '{NAME}' not found"))
    assert client.run(path, expect_buy, NAME, 1, method="POST") == (
        BuyOutcome("not_found"), "status: expected 200, saw 404 RESOURCE_NOT_FOUND")


def test_buy_server_error_is_failed(client, server):
    path = server.put("/buy-500", 500, error("DATABASE_ERROR"))
    assert client.run(path, expect_buy, NAME, 1, method="POST") == (
        BuyOutcome("failed"), "status: expected 200, saw 500 DATABASE_ERROR")


# ---- stock update ----

def test_stock_update_confirmed_passes(client, server):
    path = server.put("/stock", 200, success({"message": "Stock updated successfully"}))
    assert client.run(path, expect_stock_updated, method="PATCH") == (True, None)
    assert STATS.stock_updates == 1


def test_stock_update_with_other_message_fails(client, server):
    path = server.put("/stock-odd", 200, success({"message": "ok"}))
    assert client.run(path, expect_stock_updated, method="PATCH") == (
        False, "stock_update: expected message 'Stock updated successfully', saw keys [message]")
    assert STATS.stock_updates == 0


# ---- expected errors ----

def test_expected_error_passes(client, server):
    path = server.put("/missing", 404, error("RESOURCE_NOT_FOUND"))
    assert client.run(path, expect_error, 404, "RESOURCE_NOT_FOUND") == (True, None)


def test_invalid_path_answered_with_500_is_the_reported_defect(client, server):
    path = server.put("/no/such/path", 500, error("UNKNOWN_ERROR", "An internal server error occurred."))
    assert client.run(path, expect_error, 404, "RESOURCE_NOT_FOUND", name="Invalid_Path") == (
        False, "status: expected 404, saw 500 UNKNOWN_ERROR")
    assert STATS.unexpected_statuses == {"Invalid_Path 500": 1}


def test_expected_error_with_other_code_fails(client, server):
    path = server.put("/wrong-code", 400, error("INSUFFICIENT_STOCK"))
    assert client.run(path, expect_error, 400, "VALIDATION_ERROR") == (
        False, "error_code: expected VALIDATION_ERROR, saw INSUFFICIENT_STOCK")


def test_expected_error_without_envelope_fails(client, server):
    path = server.put("/plain-400", 400, b'{"message": "bad"}')
    assert client.run(path, expect_error, 400, "VALIDATION_ERROR") == (
        False, "error_envelope: expected status=error with error.code and error.message, saw keys [message]")


def test_expected_error_as_html_fails(client, server):
    path = server.put("/html-404", 404, b"<h1>not found</h1>", "text/html")
    assert client.run(path, expect_error, 404, "RESOURCE_NOT_FOUND")[1] == (
        "content_type: expected application/json, saw text/html")


# ---- edge cases ----

def test_edge_case_item_range_and_filter(client, server):
    case = EdgeCase(label="t", method="GET", path="/cat-books", params={"category": "Books"},
                    expect_status=200, expect_items=(1, 1000))
    server.put(case.path, 200, success([BOOK]))
    assert client.run(case.path, expect_edge_case, case) == (True, None)
    server.put(case.path, 200, success([]))
    assert client.run(case.path, expect_edge_case, case) == (False, "item_count: expected 1..1000 items, saw fewer")


def test_edge_case_lowercase_category_answered_with_books_fails(client, server):
    case = EdgeCase(label="t", method="GET", path="/cat-lower", params={"category": "books"},
                    expect_status=200, expect_items=(0, 0))
    server.put(case.path, 200, success([BOOK]))
    assert client.run(case.path, expect_edge_case, case)[1] == "category_filter: expected only 'books', saw other categories"


def test_edge_case_expected_error(client, server):
    case = EdgeCase(label="t", method="POST", path="/edge-400", json={"name": ""},
                    expect_status=400, expect_code="VALIDATION_ERROR")
    server.put(case.path, 400, error("VALIDATION_ERROR"))
    assert client.run(case.path, expect_edge_case, case, method="POST") == (True, None)
    server.put(case.path, 404, error("RESOURCE_NOT_FOUND"))
    assert client.run(case.path, expect_edge_case, case, method="POST")[1] == "status: expected 400, saw 404 RESOURCE_NOT_FOUND"


# ---- transport problems and robustness ----

def test_connection_refused_is_a_connection_failure(server):
    for kind in ("fast", "requests"):
        client = Client(kind, f"http://127.0.0.1:{free_port()}")
        outcome, failure = client.run("/products/buy", expect_buy, NAME, 1, method="POST")
        assert outcome == BuyOutcome("failed")
        assert failure.startswith("connection: ") and "127.0.0.1" not in failure, failure
        assert STATS.validation_failures.get("connection") and not STATS.unexpected_statuses


def test_timeout_is_a_timeout_failure(client, server):
    assert client.run("/slow", expect_health) == (False, "timeout: no response within the request timeout")
    assert STATS.validation_failures == {"timeout": 1}


def test_validator_bug_is_reported_not_raised(client, server):
    path = server.put("/health-crash", 200, b'{"status": "ok"}')
    assert client.run(path, expect_edge_case, object()) == (False, "validator: AttributeError")


def test_reasons_never_carry_product_names_or_stock(client, server):
    path = server.put("/buy-name-leak", 400, insufficient(available=50, requested=3))
    failure = client.run(path, expect_buy, NAME, 3, method="POST")[1]
    assert NAME not in failure and "50" not in failure


# ---- pure helpers ----

@pytest.mark.parametrize("message, parsed", [
    ("Insufficient stock for product 'X'. Available: 2, Requested: 5", (2, 5)),
    ("Insufficient stock for product 'Available: 9, Requested: 9'. Available: 0, Requested: 1", (0, 1)),
    ("Insufficient stock for product 'X'. Available: 2", None),
    ("", None),
    (None, None),
])
def test_parse_insufficient_stock(message, parsed):
    assert parse_insufficient_stock(message) == parsed


def test_checks_compose_outside_locust():
    assert validators.check_success_envelope({"status": "success", "data": [1]}) == [1]
    with pytest.raises(validators.CheckFailed) as failed:
        validators.check_error_envelope({"status": "error", "error": {"code": "X", "message": "m"}}, "Y")
    assert failed.value.reason == "error_code: expected Y, saw X" and failed.value.check == "error_code"
