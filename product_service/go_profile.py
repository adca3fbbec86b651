"""`--profile go`: the real Go product-service as observed on 2026-11-30, defects included.

Everything here reproduces a row of "Observed behaviour of the real service" in
/work/shared/product-service-contract.md (summarised in docs/product_service_api_spec.md):
lenient routing, 500 for unknown paths and wrong methods, Fiber's CORS middleware, no length
limits, 4 MB form/XML/JSON bodies, lists in random order, torn reads while the data file is
rewritten, lost updates from whole-file rewrites of a stale read, and a sleep in each layer.
The contract profile (app.py) stays the readable, exact one.
"""
from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.web_request import BaseRequest

from . import payloads
from .app import MAX_ECHOED_PATH, _product_json, envelope_for_status, read_limited, too_large
from .faults import Faults, RacyWrites
from .hardening import raw_response
from .responses import (DATABASE_ERROR_BODY, HEALTH_BODY, INTERNAL_ERROR_BODY, INTERNAL_ERROR_MESSAGE, INVALID_BODY,
                        MISSING_CATEGORY, RESOURCE_NOT_FOUND, STOCK_UPDATED_BODY, TOO_MANY_CONNECTIONS, UNKNOWN_ERROR,
                        ApiError, dumps, error_body, insufficient_stock, product_not_found, success_body)
from .store import Store

MAX_BODY = 4 * 1024 * 1024  # Fiber's default BodyLimit
PREFLIGHT_METHODS = "GET,POST,HEAD,PUT,DELETE,PATCH"  # Fiber's CORS middleware default
# Torn reads: a rewrite keeps the file torn for TORN_WINDOW_S before the writer answers, and a read in
# that window fails with TORN_READ_SHARE. 30 concurrent buyers keep the window open (about 30% of buys
# answer 500, as measured on the Go service); a 20-user mixed run writes a few times a second, so a few
# reads fail; a sequential client never sees its own rewrite.
TORN_READ_SHARE = 0.3
TORN_WINDOW_S = 0.005
# Sleeps per request with latency on: the Go service's mean latency over the mean of one sleep
# (10-100 ms): all products 215 ms, category 180, details 259, stock update 289, buy 170.
LAYERS = {"products": 3.9, "category": 3.3, "details": 4.7, "stock": 5.0, "buy": 3.0}
JSON = {"Content-Type": "application/json"}
ORIGIN = {"Access-Control-Allow-Origin": "*"}
log = logging.getLogger("product_service")
T = TypeVar("T")
GoHandler = Callable[[BaseRequest], Awaitable[bytes]]


class TornRead(Exception):
    """A read overlapped a rewrite of the data file and saw it truncated."""


class GoResponse(web.Response):
    """A response without the Server header (Fiber sends none)."""

    async def _write_headers(self) -> None:  # aiohttp adds Server in _prepare_headers, just before this
        self._headers.popall("Server", None)
        await super()._write_headers()


class DataFile:
    """The Go service's JSON file on top of the SQLite table: whole-file reads that can be torn, whole-file rewrites."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._rewriting = 0

    def check_read(self) -> None:
        if self._rewriting and random.random() < TORN_READ_SHARE:
            raise TornRead

    def read_stocks(self) -> dict[str, int]:
        self.check_read()
        return self.store.stocks()

    def rewrite(self, stocks: dict[str, int]) -> None:
        """Write back every stock this writer read (so changes made since by others are lost)."""
        self.store.write_stocks(stocks)

    async def finish_rewrite(self) -> None:
        """The rest of the rewrite: the file stays torn for TORN_WINDOW_S, then the writer may answer."""
        self._rewriting += 1
        try:
            await asyncio.sleep(TORN_WINDOW_S)
        finally:
            self._rewriting -= 1


class ShuffledViews:
    """Serialized products, rebuilt when the table changes, listed in a new random order on every call (a Go map)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._version: tuple[int, int] | None = None
        self._all: list[bytes] = []
        self._by_category: dict[str, list[bytes]] = {}

    def _fresh(self) -> None:
        version = self._store.version()
        if version != self._version:
            self._all, self._by_category = [], {}
            for product in self._store.all_products():
                item = dumps(_product_json(product))
                self._all.append(item)
                self._by_category.setdefault(product.category, []).append(item)
            self._version = version

    def all(self) -> bytes:
        self._fresh()
        return _shuffled_list(self._all)

    def category(self, category: str) -> bytes:
        self._fresh()
        return _shuffled_list(self._by_category.get(category, []))


def _shuffled_list(items: list[bytes]) -> bytes:
    return b'{"status":"success","data":[' + b",".join(random.sample(items, len(items))) + b"]}"


def _route_key(path: str) -> str:
    """Fiber's defaults: case-insensitive, and a trailing slash does not matter."""
    key = path.lower()
    return key[:-1] if len(key) > 1 and key.endswith("/") else key


class GoProductService:
    """The HTTP surface of the Go service as observed, on the same store and server as the contract profile."""

    max_body = MAX_BODY
    refusal = raw_response(503, "Service Unavailable", error_body(UNKNOWN_ERROR, TOO_MANY_CONNECTIONS), JSON)

    def __init__(self, store: Store, faults: Faults) -> None:
        self.store = store
        self.faults = faults
        self.file = DataFile(store)
        self.views = ShuffledViews(store)
        self.racy = RacyWrites()
        self.routes: dict[str, dict[str, GoHandler]] = {
            "/health": {"GET": self.health},
            "/products": {"GET": self.list_products},
            "/products/category": {"GET": self.list_category},
            "/products/details": {"POST": self.details},
            "/products/stock": {"PATCH": self.update_stock},
            "/products/buy": {"POST": self.buy},
        }

    def error_response(self, status: int, message: str) -> web.Response:
        return GoResponse(body=envelope_for_status(status, message), status=status, headers=JSON)

    def is_health(self, path: str) -> bool:
        """The readiness probe's route (any case, trailing slash or not): never failed or queued."""
        return _route_key(path) == "/health"

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        headers = {**JSON, **ORIGIN} if "Origin" in request.headers else JSON
        method = request.method
        try:
            if method == "OPTIONS" and "Origin" in request.headers \
                    and "Access-Control-Request-Method" in request.headers:
                return _preflight(request)  # Fiber's CORS middleware answers before routing, for any path
            key = _route_key(request.path)
            if self.faults.error_rate and key != "/health" and self.faults.should_fail():
                return GoResponse(body=INTERNAL_ERROR_BODY, status=500, headers=headers)
            methods = self.routes.get(key)
            if methods is None:
                raise ApiError(500, UNKNOWN_ERROR, INTERNAL_ERROR_MESSAGE)  # the defect: Fiber's 404 becomes 500
            handler = methods.get("GET" if method == "HEAD" else method)
            if handler is None:
                allow = ", ".join(["GET", "HEAD"] if "GET" in methods else list(methods))
                raise ApiError(500, UNKNOWN_ERROR, INTERNAL_ERROR_MESSAGE, {"Allow": allow})  # and 405 too
            return GoResponse(body=await handler(request), headers=headers)
        except ApiError as exc:
            return GoResponse(body=error_body(exc.code, exc.message), status=exc.status,
                              headers={**headers, **exc.headers} if exc.headers else headers)
        except (TornRead, sqlite3.Error) as exc:
            if not isinstance(exc, TornRead):
                log.exception("database error on %s %s", method, request.path[:MAX_ECHOED_PATH])
            return GoResponse(body=DATABASE_ERROR_BODY, status=500, headers=headers)
        except Exception:
            log.exception("unexpected error on %s %s", method, request.path[:MAX_ECHOED_PATH])
            return GoResponse(body=INTERNAL_ERROR_BODY, status=500, headers=headers)

    async def _layers(self, endpoint_or_count: str | int) -> None:
        """One uniform random sleep per layer the request passes (SIMULATE_DELAY); none with latency off."""
        latency = self.faults.latency_ms
        if latency is None:
            return
        if isinstance(endpoint_or_count, str):
            mean = LAYERS[endpoint_or_count]
            count = int(mean) + (random.random() < mean % 1)
        else:
            count = endpoint_or_count
        for _ in range(count):
            await asyncio.sleep(random.uniform(*latency) / 1000.0)

    async def health(self, request: BaseRequest) -> bytes:
        return HEALTH_BODY

    async def list_products(self, request: BaseRequest) -> bytes:
        await self._layers("products")
        self.file.check_read()
        return self.views.all()

    async def list_category(self, request: BaseRequest) -> bytes:
        category = request.query.get("category", "")
        if not category:
            raise MISSING_CATEGORY
        await self._layers("category")
        self.file.check_read()
        return self.views.category(category)  # no length limit: a long category is just unknown

    async def details(self, request: BaseRequest) -> bytes:
        name = payloads.details_from(await _fields(request, payloads.DETAILS_FIELDS), max_name=None)
        await self._layers("details")
        self.file.check_read()
        product = self.store.find(name)
        if product is None:
            raise product_not_found(name)
        return success_body(_product_json(product))

    async def update_stock(self, request: BaseRequest) -> bytes:
        update = payloads.stock_update_from(await _fields(request, payloads.STOCK_FIELDS), max_name=None)

        def set_stock(stocks: dict[str, int]) -> None:
            if update.name not in stocks:
                raise ApiError(404, RESOURCE_NOT_FOUND, f"Product with name '{update.name}' not found for stock update")
            stocks[update.name] = update.stock

        await self._write("stock", set_stock)
        return STOCK_UPDATED_BODY

    async def buy(self, request: BaseRequest) -> bytes:
        order = payloads.buy_from(await _fields(request, payloads.BUY_FIELDS), max_name=None)

        def take(stocks: dict[str, int]) -> int:
            stock = stocks.get(order.name)
            if stock is None:
                raise product_not_found(order.name)
            if order.quantity > stock:
                raise insufficient_stock(order.name, stock, order.quantity)
            stocks[order.name] = stock - order.quantity
            return stock - order.quantity

        remaining = await self._write("buy", take)
        return success_body({"productName": order.name, "quantity": order.quantity, "remainingStock": remaining})

    async def _write(self, endpoint: str, change: Callable[[dict[str, int]], T]) -> T:
        """Read the whole file, change it, write it all back; whatever others wrote in between is lost.

        With latency on, the last layer sleeps between the read and the rewrite (the Go service's
        window widens with its delays); otherwise a racy share of writes lands just after the next one.
        """
        mean = LAYERS[endpoint]
        layers = int(mean) + (random.random() < mean % 1)
        await self._layers(layers - 1)
        stocks = self.file.read_stocks()
        result = change(stocks)
        if self.faults.latency_ms is not None:
            await self._layers(1)
        elif self.racy.is_racy():
            await self.racy.after_next_write(lambda: self.file.rewrite(stocks))
            await self.file.finish_rewrite()
            return result
        self.file.rewrite(stocks)
        self.racy.committed()
        await self.file.finish_rewrite()
        return result


def _preflight(request: BaseRequest) -> web.Response:
    headers = {**ORIGIN, "Access-Control-Allow-Methods": PREFLIGHT_METHODS}
    asked = request.headers.get("Access-Control-Request-Headers")
    if asked:
        headers["Access-Control-Allow-Headers"] = asked
    return GoResponse(status=204, headers=headers)


async def _fields(request: BaseRequest, fields: tuple[str, ...]) -> payloads.Fields:
    """Fiber's BodyParser: JSON (a media type ending in json), form-encoded, or XML; anything else is invalid."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise too_large(MAX_BODY)
    media = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    body = await read_limited(request, MAX_BODY)
    if media.endswith("json"):
        return payloads.decode_json(body, fields)
    if media.startswith("application/x-www-form-urlencoded"):
        return _typed(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True), fields)
    if media.startswith(("text/xml", "application/xml")):
        return _typed(_xml_pairs(body), fields)
    raise INVALID_BODY


def _xml_pairs(body: bytes) -> list[tuple[str, str]]:
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, ValueError):
        raise INVALID_BODY from None
    return [(child.tag.rpartition("}")[2], (child.text or "").strip()) for child in root]


def _typed(pairs: list[tuple[str, str]], fields: tuple[str, ...]) -> payloads.Fields:
    """Text fields by case-insensitive name (first wins); integer fields parsed like strconv.ParseInt."""
    found: payloads.Fields = {}
    for key, value in pairs:
        folded = key.lower()
        if folded not in fields or folded in found:
            continue
        if folded == "name":
            found[folded] = value
        elif value:  # an empty value leaves the zero value, which fails 'required'
            digits = value[1:] if value[0] in "+-" else value
            if not digits.isascii() or not digits.isdigit():
                raise INVALID_BODY
            found[folded] = int(value)  # out of int64 range is caught by payloads
    return found
