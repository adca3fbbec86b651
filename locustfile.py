"""Load test of product-service: weighted shop tasks, every response validated against the contract.

Run it through ./run_tests.sh (it starts the bundled reference service when no host is given), or as
`locust -f locustfile.py --host URL`. Where things live: config.yaml (every knob), validators.py (what
the contract promises), shared_data.py (the product cache), test_data.py (edge cases and invalid
payloads), event_hooks.py (every event listener, attached from the last line of this file),
custom_load_shape.py (shapes); the machinery behind them is the loadsuite/ package (docs/architecture.md).
"""
from __future__ import annotations

import random
import sys
import time
from functools import wraps
from urllib.parse import quote

from gevent.event import Event
from locust import FastHttpUser, HttpUser, between, constant, events, tag

import event_hooks
from config_loader import get_config_or_exit
from custom_load_shape import all_shape_classes, shape_class_or_exit
from loadsuite.names import ALL_USER_TYPES, USER_TYPE_TASKS
from loadsuite.openmodel import executor_for
from loadsuite.oracle import recorder
from loadsuite.runtime.bodies import bound_fast_session, bound_requests_session
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
FLASH = CONFIG.flash_sale

# Work done once, not per request: category URLs and request names, edge-case request names.
CATEGORY_REQUESTS = tuple(
    (category, f"/products/category?category={quote(category, safe='')}", f"Get_Products_By_Category_{category}",
     category in DATA.empty_categories)
    for category in DATA.categories
)
EDGE_CASE_NAMES = {case.label: f"Edge_Case_{case.label}" for case in EDGE_CASES}
BEYOND_STOCK_QUANTITY = 1_000_000
THINK_TIME = between(CONFIG.wait_time.min_seconds, CONFIG.wait_time.max_seconds)
BASE_WAIT = THINK_TIME  # closed model; with load_shape.target_rps the open model's executor starts task runs
SALE_WAIT = constant(0)  # the flash sale's rush: no think time (the open model keeps its schedule)


class FlashSale:
    """This process's view of the run's flash sale: which run opened it, on which product, whether it is stocked."""

    def __init__(self) -> None:
        self.run: float | None = None  # started_at of the run whose sale this process opened
        self.product: str | None = None
        self.stocked = False
        self.opened = Event()  # set once this run's opening stock update has answered

    def begin(self, run: float) -> None:
        self.run, self.stocked, self.opened = run, False, Event()

    def open_for(self, run: float | None, now: float) -> bool:
        """The sale of this run is open now (the clock is read once per task, nothing else)."""
        return run is not None and FLASH.start_seconds <= now - run < FLASH.start_seconds + FLASH.duration_seconds


SALE = FlashSale()


def _client_base():
    """FastHttpUser (geventhttpclient) or HttpUser (requests), as config.yaml's service.client says."""
    if CONFIG.service.client == "fast":
        return FastHttpUser
    return HttpUser


class ShopUser(_client_base()):
    """The shop's tasks; subclasses choose their mix and weights from config.yaml."""

    abstract = True
    host = CONFIG.service.base_url
    flash_left: float | None = None  # the run whose flash sale this user has left (sold out)
    flash_buying = False  # in the sale now: no think time (a closed model only; an open model keeps its pace)
    network_timeout = CONFIG.service.request_timeout_seconds
    connection_timeout = CONFIG.service.request_timeout_seconds
    insecure = False

    def run(self) -> None:
        executor = executor_for(self.environment)  # None in the closed model
        return super().run() if executor is None else executor.serve(self)

    def wait_time(self) -> float:
        if self.flash_buying:
            return SALE_WAIT(self)
        think, run = BASE_WAIT(self), SUITE.started_at
        if FLASH.enabled and run is not None and self.flash_left != run and _still_buys(type(self)):
            until_sale = run + FLASH.start_seconds - time.time()
            if 0 < until_sale < think:
                return until_sale  # every buyer is there when the sale opens: the rush starts at once
        return think

    def on_start(self) -> None:
        max_bytes = int(CONFIG.service.max_response_mib * 2**20)
        if isinstance(self, FastHttpUser):
            bound_fast_session(self.client, max_bytes)
        else:
            bound_requests_session(self.client, max_bytes)
            self.client.request = _with_timeout(self.client.request, CONFIG.service.request_timeout_seconds)

    # Happy paths -------------------------------------------------------------------------------

    @tag("browse")
    def browse_all_products(self) -> None:
        with self.client.get("/products", name="Get_All_Products", catch_response=True) as resp:
            products = expect_product_list(resp)
        if products is not None:
            CACHE.refresh_all(products)

    @tag("category")
    def get_products_by_category(self) -> None:
        category, path, name, expect_empty = random.choice(CATEGORY_REQUESTS)
        with self.client.get(path, name=name, catch_response=True) as resp:
            products = expect_product_list(resp, category=category, expect_empty=expect_empty)
        if products:
            CACHE.merge(products)

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

    @tag("admin")
    def update_stock(self) -> None:
        product = CACHE.random_product()
        if product is None:
            return self.browse_all_products()
        self._set_stock(product["name"], random.randint(DATA.stock_update_min, DATA.stock_update_max),
                        "Update_Product_Stock")

    def _set_stock(self, name: str, stock: int, request_name: str) -> bool:
        started, outcome, updated = time.time(), "failed", False
        try:  # recorded even if the user is stopped mid-request: an unknown outcome is "failed"
            with self.client.patch("/products/stock", json={"name": name, "stock": stock},
                                   name=request_name, catch_response=True) as resp:
                updated = expect_stock_updated(resp)
            outcome = _stock_outcome(resp.status_code, updated)
        finally:
            LEDGER.stock_set(started, time.time(), name, stock, outcome)
        if updated:
            CACHE.set_stock(name, stock)
        return updated

    @tag("error")
    def hit_invalid_path(self) -> None:
        with self.client.get("/products/this-path-does-not-exist", name="Invalid_Path", catch_response=True) as resp:
            expect_error(resp, 404, "RESOURCE_NOT_FOUND")

    @tag("health")
    def health_check(self) -> None:
        with self.client.get("/health", name="Health_Check", catch_response=True) as resp:
            expect_health(resp)

    @tag("edge_case")
    def edge_case(self) -> None:
        case = random.choice(EDGE_CASES)
        product = CACHE.random_product()
        if case.needs_product and product is None:
            return self.browse_all_products()
        with self.client.request(case.method, case.path, name=EDGE_CASE_NAMES[case.label], catch_response=True,
                                 **case.request_kwargs(product["name"] if product else None)) as resp:
            expect_edge_case(resp, case)

    # The flash sale (flash_sale in config.yaml) ---------------------------------------------------

    def flash_sale_buy(self) -> None:
        """One unit of the sale's product, again and again with no think time, until it is sold out."""
        name = SALE.product
        with LEDGER.buying(name, 1) as pending:
            with self.client.post("/products/buy", json={"name": name, "quantity": 1},
                                  name="Flash_Sale_Buy", catch_response=True) as resp:
                outcome = expect_buy(resp, name, 1)
            pending.done(outcome.kind, outcome.remaining, outcome.available)
        if outcome.kind in ("insufficient", "not_found"):
            self.flash_left, self.flash_buying = SUITE.started_at, False

    def open_flash_sale(self) -> None:
        """The first buyer of this process to arrive stocks the sale's product (a stock update the oracle records)."""
        SALE.begin(SUITE.started_at)
        try:
            SALE.product = SUITE.contended_product(self.host)
            for _attempt in range(3 if SALE.product is not None else 0):  # a 5xx (a torn read) is tried again
                SALE.stocked = self._set_stock(SALE.product, FLASH.stock, "Flash_Sale_Restock")
                if SALE.stocked:
                    break
        finally:
            SALE.opened.set()

    # Expected negative paths -------------------------------------------------------------------

    @tag("negative")
    def details_unknown_product(self) -> None:
        with self.client.post("/products/details", json={"name": DATA.non_existent_product_name},
                              name="Details_Unknown_Product", catch_response=True) as resp:
            expect_error(resp, 404, "RESOURCE_NOT_FOUND")

    @tag("negative")
    def buy_unknown_product(self) -> None:
        with self.client.post("/products/buy", json={"name": DATA.non_existent_product_name, "quantity": 1},
                              name="Buy_Unknown_Product", catch_response=True) as resp:
            expect_error(resp, 404, "RESOURCE_NOT_FOUND")

    @tag("negative")
    def buy_beyond_stock(self) -> None:
        product = CACHE.random_product()
        if product is None:
            return self.browse_all_products()
        with self.client.post("/products/buy", json={"name": product["name"], "quantity": BEYOND_STOCK_QUANTITY},
                              name="Buy_Beyond_Stock", catch_response=True) as resp:
            expect_error(resp, 400, "INSUFFICIENT_STOCK")

    @tag("negative")
    def invalid_buy_payload(self) -> None:
        self._send_invalid_payload("/products/buy", "POST", random.choice(INVALID_BUY_PAYLOADS), "Invalid_Buy_Payload_")

    @tag("negative")
    def invalid_stock_payload(self) -> None:
        self._send_invalid_payload("/products/stock", "PATCH", random.choice(INVALID_STOCK_PAYLOADS), "Invalid_Stock_Payload_")

    @tag("negative")
    def missing_category(self) -> None:
        with self.client.get("/products/category", name="Missing_Category", catch_response=True) as resp:
            expect_error(resp, 400, "VALIDATION_ERROR")

    def _send_invalid_payload(self, path: str, method: str, payload, prefix: str) -> None:
        product = CACHE.random_product()
        name = product["name"] if product else DATA.non_existent_product_name
        with self.client.request(method, path, name=prefix + payload.label, catch_response=True,
                                 **payload.request_kwargs(name)) as resp:
            expect_error(resp, payload.expect_status, payload.expect_code)


def _with_timeout(request, timeout: float):
    """Give every request of a requests-based session the configured timeout (requests has no default)."""
    def request_with_timeout(method, url, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return request(method, url, **kwargs)
    return request_with_timeout


def _stock_outcome(status: int, updated: bool) -> str:
    """How the oracle must read a stock update: applied, certainly not applied (4xx) or unknown."""
    if updated:
        return "ok"
    return "rejected" if 400 <= status < 500 else "failed"


def _mix(user_type: str) -> dict:
    """The weighted task dict of a user type (loadsuite.names.USER_TYPE_TASKS), weights from config.yaml.

    Users whose mix buys join the flash sale while it is open: each of their tasks then becomes a sale buy.
    """
    weights = {**CONFIG.scenario_weights.model_dump(), **CONFIG.negative_weights.model_dump()}
    names = [name for name in USER_TYPE_TASKS[user_type] if weights[name] > 0]
    joins = FLASH.enabled and ShopUser.buy_product.__name__ in names
    return {(_or_flash_sale(getattr(ShopUser, name)) if joins else getattr(ShopUser, name)): weights[name]
            for name in names}


def _or_flash_sale(task):
    """The task, or a flash-sale buy while this run's sale is open and the user has not left it (one clock read)."""
    @wraps(task)  # keeps the name and the tags (--tags filtering)
    def task_or_sale(user):
        run = SUITE.started_at
        if user.flash_left != run and SALE.open_for(run, time.time()) and _still_buys(type(user)):
            if SALE.run != run:
                user.open_flash_sale()
            else:  # the others wait for the opening stock update instead of thinking again
                SALE.opened.wait(timeout=CONFIG.service.request_timeout_seconds)
            if SALE.stocked:
                user.flash_buying = True
                return user.flash_sale_buy()
        user.flash_buying = False
        return task(user)
    return task_or_sale


def _still_buys(user_class) -> bool:
    """buy_product is still among the class's tasks after --tags/--exclude-tags (asked once per class)."""
    buys = user_class.__dict__.get("_still_buys")
    if buys is None:
        buys = any(getattr(task, "__name__", "") == ShopUser.buy_product.__name__ for task in user_class.tasks)
        user_class._still_buys = buys
    return buys


class ProductServiceUser(ShopUser):
    """The full mix: every happy path, edge case and negative path."""

    weight = CONFIG.user_types.ProductServiceUser
    tasks = _mix("ProductServiceUser")


class BrowserUser(ShopUser):
    """Reads only: lists, categories, details, health."""

    weight = CONFIG.user_types.BrowserUser
    tasks = _mix("BrowserUser")


class ShopperUser(ShopUser):
    """Browses and buys, including the buys the shop must refuse."""

    weight = CONFIG.user_types.ShopperUser
    tasks = _mix("ShopperUser")


class AdminUser(ShopUser):
    """Restocks products and watches health."""

    weight = CONFIG.user_types.AdminUser
    tasks = _mix("AdminUser")


class ContentionUser(ShopUser):
    """Many users buying one product with no wait (tag contention; off unless selected).

    The product's stock is set once per run before traffic (event_hooks); the oracle then decides
    whether the service lost updates or oversold.
    """

    wait_time = constant(0)

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

    tasks = [buy_contended_product]


# Locust runs the LoadTestShape it finds in this module; the web UI's class picker offers all of them.
if "--class-picker" in sys.argv:
    globals().update(all_shape_classes(CONFIG.load_shape, ALL_USER_TYPES))
else:
    SelectedShape = shape_class_or_exit(CONFIG.load_shape, ALL_USER_TYPES)
    if SelectedShape is None:
        del SelectedShape

SUITE = event_hooks.register(events, CONFIG)
