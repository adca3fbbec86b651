"""Load test of product-service: the shop's tasks, every response validated against the contract.

A task is one method of ShopUser, written as in Locust's own examples: `@task(weight)`, `@tag(...)`, pick the
data, one request in `with self.client...(catch_response=True) as resp:`, one `expect_*` call from validators.py.
config.yaml's scenario_weights / negative_weights override a task's weight when they name it; a user type is
one class below (its tasks, its weight). README "Adding a task" walks through one.

Run it through ./run_tests.sh (it starts the bundled reference service when no host is given), or as
`locust -f locustfile.py --host URL`. Where things live: config.yaml (every knob), validators.py (what the
contract promises), shared_data.py (the product cache), test_data.py (edge cases and invalid payloads),
event_hooks.py (every event listener, attached from the last line of this file), custom_load_shape.py
(shapes); the machinery behind them is the loadsuite/ package (docs/architecture.md).
"""
from __future__ import annotations

import random
import sys
import time
from urllib.parse import quote

from locust import FastHttpUser, HttpUser, between, constant, events, tag, task

import event_hooks
from config_loader import get_config_or_exit
from custom_load_shape import all_shape_classes, shape_class_or_exit
from loadsuite import catalogue
from loadsuite.openmodel import executor_for
from loadsuite.oracle import recorder, stock_update_outcome
from loadsuite.transport.bodies import bound_fast_session, bound_requests_session, with_timeout
from loadsuite.scenarios.flash_sale import FlashSale, ShopTaskSet
from shared_data import ProductCache
from test_data import EDGE_CASES, INVALID_BUY_PAYLOADS, INVALID_STOCK_PAYLOADS
from validators import (
    expect_buy,
    expect_edge_case,
    expect_error,
    expect_health,
    expect_product,
    expect_product_list,
    expect_stock_updated,
)

CONFIG = get_config_or_exit()
DATA = CONFIG.test_data
CACHE = ProductCache(CONFIG.cache.max_products, skew=CONFIG.popularity.skew)
LEDGER = recorder()

# Work done once, not per request: category URLs and request names, edge-case request names.
CATEGORY_REQUESTS = tuple(
    (category, f"/products/category?category={quote(category, safe='')}", f"Get_Products_By_Category_{category}",
     category in DATA.empty_categories)
    for category in DATA.categories
)
EDGE_CASE_NAMES = {case.label: f"Edge_Case_{case.label}" for case in EDGE_CASES}
BEYOND_STOCK_QUANTITY = 1_000_000
THINK_TIME = between(CONFIG.wait_time.min_seconds, CONFIG.wait_time.max_seconds)
CLIENT = FastHttpUser if CONFIG.service.client == "fast" else HttpUser  # service.client in config.yaml


class ShopUser(CLIENT):
    """The shop's tasks. A subclass is a user type: it runs all of them, or the ones its `tasks` names."""

    abstract = True
    host = CONFIG.service.base_url
    network_timeout = CONFIG.service.request_timeout_seconds
    connection_timeout = CONFIG.service.request_timeout_seconds
    insecure = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        catalogue.apply(cls, CONFIG)  # weights from config.yaml over the class's and the decorators'

    def wait_time(self) -> float:
        return SALE.think_time(self, THINK_TIME(self))

    def on_start(self) -> None:
        self._taskset_instance = ShopTaskSet(self)  # the flash sale's buys while it is open, else the mix
        max_bytes = int(CONFIG.service.max_response_mib * 2**20)
        if isinstance(self, FastHttpUser):
            bound_fast_session(self.client, max_bytes)
        else:
            bound_requests_session(self.client, max_bytes)
            self.client.request = with_timeout(self.client.request, CONFIG.service.request_timeout_seconds)

    def run(self) -> None:
        executor = executor_for(self.environment)  # None in the closed model
        return super().run() if executor is None else executor.serve(self)

    # Happy paths -------------------------------------------------------------------------------

    @task(10)
    @tag("browse")
    def browse_all_products(self) -> None:
        with self.client.get("/products", name="Get_All_Products", catch_response=True) as resp:
            products = expect_product_list(resp)
        if products is not None:
            CACHE.refresh_all(products)

    @task(8)
    @tag("category")
    def get_products_by_category(self) -> None:
        category, path, name, expect_empty = random.choice(CATEGORY_REQUESTS)
        with self.client.get(path, name=name, catch_response=True) as resp:
            products = expect_product_list(resp, category=category, expect_empty=expect_empty)
        if products:
            CACHE.merge(products)

    @task(10)
    @tag("details")
    def get_product_details(self) -> None:
        product = CACHE.random_product()
        if product is None:
            return self.browse_all_products()
        with self.client.post("/products/details", json={"name": product["name"]},
                              name="Get_Product_Details", catch_response=True) as resp:
            details = expect_product(resp, product["name"])
        if details is not None:
            CACHE.upsert(details)

    @task(7)
    @tag("purchase")
    def buy_product(self) -> None:
        product = CACHE.random_in_stock()
        if product is None:
            return self.browse_all_products()
        name = product["name"]
        quantity = random.randint(1, max(1, min(DATA.max_buy_quantity, product["stock"])))
        with LEDGER.buying(name, quantity) as pending:  # recorded even if the user is stopped mid-request
            with self.client.post("/products/buy", json={"name": name, "quantity": quantity},
                                  name="Buy_Product", catch_response=True) as resp:
                outcome = expect_buy(resp, name, quantity)
            pending.done(outcome.kind, outcome.remaining, outcome.available)
        if outcome.remaining is not None:
            CACHE.set_stock(name, outcome.remaining)
        elif outcome.available is not None:
            CACHE.set_stock(name, outcome.available)

    @task(3)
    @tag("admin")
    def update_stock(self) -> None:
        product = CACHE.random_product()
        if product is None:
            return self.browse_all_products()
        self._set_stock(product["name"], random.randint(DATA.stock_update_min, DATA.stock_update_max),
                        "Update_Product_Stock")

    @task(1)
    @tag("error")
    def hit_invalid_path(self) -> None:
        with self.client.get("/products/this-path-does-not-exist", name="Invalid_Path", catch_response=True) as resp:
            expect_error(resp, 404, "RESOURCE_NOT_FOUND")

    @task(2)
    @tag("health")
    def health_check(self) -> None:
        with self.client.get("/health", name="Health_Check", catch_response=True) as resp:
            expect_health(resp)

    @task(1)
    @tag("edge_case")
    def edge_case(self) -> None:
        case = random.choice(EDGE_CASES)
        product = CACHE.random_product()
        if case.needs_product and product is None:
            return self.browse_all_products()
        with self.client.request(case.method, case.path, name=EDGE_CASE_NAMES[case.label], catch_response=True,
                                 **case.request_kwargs(product["name"] if product else None)) as resp:
            expect_edge_case(resp, case)

    # Expected negative paths (negative_weights) -------------------------------------------------

    @task(1)
    @tag("negative")
    def details_unknown_product(self) -> None:
        with self.client.post("/products/details", json={"name": DATA.non_existent_product_name},
                              name="Details_Unknown_Product", catch_response=True) as resp:
            expect_error(resp, 404, "RESOURCE_NOT_FOUND")

    @task(1)
    @tag("negative")
    def buy_unknown_product(self) -> None:
        with self.client.post("/products/buy", json={"name": DATA.non_existent_product_name, "quantity": 1},
                              name="Buy_Unknown_Product", catch_response=True) as resp:
            expect_error(resp, 404, "RESOURCE_NOT_FOUND")

    @task(1)
    @tag("negative")
    def buy_beyond_stock(self) -> None:
        product = CACHE.random_product()
        if product is None:
            return self.browse_all_products()
        with self.client.post("/products/buy", json={"name": product["name"], "quantity": BEYOND_STOCK_QUANTITY},
                              name="Buy_Beyond_Stock", catch_response=True) as resp:
            expect_error(resp, 400, "INSUFFICIENT_STOCK")

    @task(1)
    @tag("negative")
    def invalid_buy_payload(self) -> None:
        self._send_invalid_payload("/products/buy", "POST", random.choice(INVALID_BUY_PAYLOADS), "Invalid_Buy_Payload_")

    @task(1)
    @tag("negative")
    def invalid_stock_payload(self) -> None:
        self._send_invalid_payload("/products/stock", "PATCH", random.choice(INVALID_STOCK_PAYLOADS), "Invalid_Stock_Payload_")

    @task(1)
    @tag("negative")
    def missing_category(self) -> None:
        with self.client.get("/products/category", name="Missing_Category", catch_response=True) as resp:
            expect_error(resp, 400, "VALIDATION_ERROR")

    # The flash sale's two requests (loadsuite/scenarios/flash_sale.py decides when) ---------------------

    def flash_sale_buy(self, name: str) -> bool:
        """One unit of the sale's product; True when the shop says it is sold out (or gone)."""
        with LEDGER.buying(name, 1) as pending:
            with self.client.post("/products/buy", json={"name": name, "quantity": 1},
                                  name="Flash_Sale_Buy", catch_response=True) as resp:
                outcome = expect_buy(resp, name, 1)
            pending.done(outcome.kind, outcome.remaining, outcome.available)
        return outcome.kind in ("insufficient", "not_found")

    def open_flash_sale(self) -> str | None:
        """Restock the sale's product (a stock update the oracle records); the product, or None if it failed."""
        product = SUITE.contended_product(self.host)
        for _attempt in range(3 if product is not None else 0):  # a 5xx (a torn read) is tried again
            if self._set_stock(product, CONFIG.flash_sale.stock, "Flash_Sale_Restock"):
                return product
        return None

    # Helpers -----------------------------------------------------------------------------------

    def _set_stock(self, name: str, stock: int, request_name: str) -> bool:
        started, outcome, updated = time.time(), "failed", False
        try:  # recorded even if the user is stopped mid-request: an unknown outcome is "failed"
            with self.client.patch("/products/stock", json={"name": name, "stock": stock},
                                   name=request_name, catch_response=True) as resp:
                updated = expect_stock_updated(resp)
            outcome = stock_update_outcome(resp.status_code, updated)
        finally:
            LEDGER.stock_set(started, time.time(), name, stock, outcome)
        if updated:
            CACHE.set_stock(name, stock)
        return updated

    def _send_invalid_payload(self, path: str, method: str, payload, prefix: str) -> None:
        product = CACHE.random_product()
        name = product["name"] if product else DATA.non_existent_product_name
        with self.client.request(method, path, name=prefix + payload.label, catch_response=True,
                                 **payload.request_kwargs(name)) as resp:
            expect_error(resp, payload.expect_status, payload.expect_code)


# User types: weight from config.yaml's user_types when it names them -----------------------------------

class ProductServiceUser(ShopUser):
    """The full mix: every happy path, edge case and negative path."""

    weight = 4


class BrowserUser(ShopUser):
    """Reads only: lists, categories, details, health."""

    weight = 3
    tasks = [ShopUser.browse_all_products, ShopUser.get_products_by_category, ShopUser.get_product_details,
             ShopUser.health_check]


class ShopperUser(ShopUser):
    """Browses and buys, including the buys the shop must refuse."""

    weight = 2
    tasks = [ShopUser.browse_all_products, ShopUser.get_product_details, ShopUser.buy_product,
             ShopUser.buy_unknown_product, ShopUser.buy_beyond_stock, ShopUser.invalid_buy_payload]


class AdminUser(ShopUser):
    """Restocks products and watches health."""

    weight = 1
    tasks = [ShopUser.browse_all_products, ShopUser.update_stock, ShopUser.invalid_stock_payload,
             ShopUser.health_check]


class ContentionUser(ShopUser):
    """Many users buying one product with no wait (runs only when named, or with --tags contention).

    The product's stock is set once per run before traffic (event_hooks); the oracle then decides
    whether the service lost updates or oversold.
    """

    on_demand = True
    wait_time = constant(0)
    tasks = []

    @task
    @tag("contention")
    def buy_contended_product(self) -> None:
        name = SUITE.contended_product(self.host)
        if name is None:
            return
        quantity = CONFIG.contention.quantity
        with LEDGER.buying(name, quantity) as pending:
            with self.client.post("/products/buy", json={"name": name, "quantity": quantity},
                                  name="Contention_Buy", catch_response=True) as resp:
                outcome = expect_buy(resp, name, quantity)
            pending.done(outcome.kind, outcome.remaining, outcome.available)


# Locust runs the LoadTestShape it finds in this module; the web UI's class picker offers all of them.
USER_TYPES = tuple(catalogue.read().user_types)
if "--class-picker" in sys.argv:
    globals().update(all_shape_classes(CONFIG.load_shape, USER_TYPES))
else:
    SelectedShape = shape_class_or_exit(CONFIG.load_shape, USER_TYPES)
    if SelectedShape is None:
        del SelectedShape

SALE = ShopUser.flash_sale = FlashSale(CONFIG.flash_sale, buy=ShopUser.flash_sale_buy, restock=ShopUser.open_flash_sale,
                                       wait_s=CONFIG.service.request_timeout_seconds)
SUITE = event_hooks.register(events, CONFIG, scenarios=[SALE])
