"""Routes and handlers of the product-service contract on aiohttp's low-level server.

A dictionary of exact paths replaces aiohttp's router and middleware chain: the service has five
fixed routes, and the dispatcher below is the one visible place where faults, 404/405, CORS
preflight and the catch-all 500 are decided.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest

from . import payloads
from .access_log import QUEUE_KEY, SPAN_KEY, AccessLog, Sink
from .capacity import Capacity, Handlers
from .catalog import Product
from .faults import Faults, RacyWrites
from .hardening import BodyTimeout, Guard, GuardedServer, Limits, raw_response
from .responses import (CORS_ORIGIN, DATABASE_ERROR_BODY, EMPTY_LIST_BODY, HEALTH_BODY, INTERNAL_ERROR_BODY,
                        INVALID_BODY, JSON_HEADERS, MISSING_CATEGORY, RESOURCE_NOT_FOUND, STOCK_UPDATED_BODY,
                        TOO_MANY_CONNECTIONS, UNKNOWN_ERROR, VALIDATION_ERROR, ApiError, error_body, insufficient_stock,
                        json_response, product_not_found, success_body)
from .store import InsufficientStock, ProductNotFound, Store
from .tracecontext import incoming, server_span

MAX_BODY = 65536
MAX_CATEGORY = 256
MAX_ECHOED_PATH = 256
log = logging.getLogger("product_service")

Handler = Callable[[BaseRequest], Awaitable[web.Response]]


def _product_json(product: Product) -> dict[str, object]:
    return {"name": product.name, "description": product.description, "price": product.price,
            "stock": product.stock, "category": product.category}


class ProductViews:
    """Serialized product lists, rebuilt only when the table's version changes (GET /products is the hot path)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._version: tuple[int, int] | None = None
        self._all = b""
        self._by_category: dict[str, bytes] = {}

    def _fresh(self) -> None:
        version = self._store.version()
        if version == self._version:
            return
        products = self._store.all_products()
        grouped: dict[str, list[dict[str, object]]] = {}
        listed = []
        for product in products:
            item = _product_json(product)
            listed.append(item)
            grouped.setdefault(product.category, []).append(item)
        self._all = success_body(listed)
        self._by_category = {category: success_body(items) for category, items in grouped.items()}
        self._version = version

    def all(self) -> bytes:
        self._fresh()
        return self._all

    def category(self, category: str) -> bytes:
        self._fresh()
        return self._by_category.get(category, EMPTY_LIST_BODY)


class ProductService:
    """The HTTP surface: one `handle` coroutine for every request aiohttp parses."""

    max_body = MAX_BODY
    refusal = raw_response(503, "Service Unavailable", error_body(UNKNOWN_ERROR, TOO_MANY_CONNECTIONS),
                           JSON_HEADERS)

    def __init__(self, store: Store, faults: Faults) -> None:
        self.store = store
        self.faults = faults
        self.views = ProductViews(store)
        self.racy = RacyWrites()
        self.routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self.health},
            "/products": {"GET": self.list_products},
            "/products/category": {"GET": self.list_category},
            "/products/details": {"POST": self.details},
            "/products/stock": {"PATCH": self.update_stock},
            "/products/buy": {"POST": self.buy_unsafe if faults.unsafe_buy else self.buy},
        }

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        path = request.path
        try:
            if self.faults.per_request and path != "/health":
                await self.faults.delay()
                if self.faults.should_fail():
                    return json_response(INTERNAL_ERROR_BODY, 500)
            methods = self.routes.get(path)
            if methods is None:
                raise ApiError(404, RESOURCE_NOT_FOUND, f"Cannot {request.method} {path[:MAX_ECHOED_PATH]}")
            handler = methods.get(request.method)
            if handler is None:
                if request.method == "HEAD" and "GET" in methods:
                    handler = methods["GET"]  # aiohttp sends the headers of the GET answer without its body
                elif request.method == "OPTIONS":
                    return _preflight(request, methods)
                else:
                    raise _method_not_allowed(request.method, path, methods)
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except sqlite3.Error:
            log.exception("database error on %s %s", request.method, path[:MAX_ECHOED_PATH])
            return json_response(DATABASE_ERROR_BODY, 500)
        except Exception:  # the contract's catch-all; no client input is meant to reach it
            log.exception("unexpected error on %s %s", request.method, path[:MAX_ECHOED_PATH])
            return json_response(INTERNAL_ERROR_BODY, 500)

    def error_response(self, status: int, message: str) -> web.Response:
        return json_response(envelope_for_status(status, message), status)

    def is_health(self, path: str) -> bool:
        """The readiness probe's path: never delayed, failed or queued."""
        return path == "/health"

    async def health(self, request: BaseRequest) -> web.Response:
        return json_response(HEALTH_BODY)

    async def list_products(self, request: BaseRequest) -> web.Response:
        return json_response(self.views.all())

    async def list_category(self, request: BaseRequest) -> web.Response:
        category = request.query.get("category", "")
        if not category:
            raise MISSING_CATEGORY
        if len(category) > MAX_CATEGORY:
            raise ApiError(400, VALIDATION_ERROR,
                           f"Invalid 'category' query parameter: longer than {MAX_CATEGORY} characters")
        return json_response(self.views.category(category))

    async def details(self, request: BaseRequest) -> web.Response:
        name = payloads.parse_details(await _read_body(request))
        product = self.store.find(name)
        if product is None:
            raise product_not_found(name)
        return json_response(success_body(_product_json(product)))

    async def update_stock(self, request: BaseRequest) -> web.Response:
        update = payloads.parse_stock_update(await _read_body(request))
        try:
            self.store.set_stock(update.name, update.stock)
        except ProductNotFound:
            raise product_not_found(update.name) from None
        self.racy.committed()
        return json_response(STOCK_UPDATED_BODY)

    async def buy(self, request: BaseRequest) -> web.Response:
        order = payloads.parse_buy(await _read_body(request))
        try:
            remaining = self.store.buy(order.name, order.quantity)
        except ProductNotFound:
            raise product_not_found(order.name) from None
        except InsufficientStock as exc:
            raise insufficient_stock(order.name, exc.available, order.quantity) from None
        return _bought(order, remaining)

    async def buy_unsafe(self, request: BaseRequest) -> web.Response:
        """The Go service's buy: read, check, blind write; a racy share overwrites a concurrent write (lost update)."""
        order = payloads.parse_buy(await _read_body(request))
        stock = self.store.read_stock(order.name)
        if stock is None:
            raise product_not_found(order.name)
        if order.quantity > stock:
            raise insufficient_stock(order.name, stock, order.quantity)
        remaining = stock - order.quantity

        def write() -> None:
            try:
                self.store.set_stock(order.name, remaining)
            except ProductNotFound:
                raise product_not_found(order.name) from None

        if self.racy.is_racy():
            await self.racy.after_next_write(write)
        else:
            write()
            self.racy.committed()
        return _bought(order, remaining)


def _bought(order: payloads.BuyOrder, remaining: int) -> web.Response:
    return json_response(success_body({"productName": order.name, "quantity": order.quantity,
                                       "remainingStock": remaining}))


def _allowed(methods: dict[str, Handler]) -> str:
    names = list(methods)
    if "GET" in methods:
        names.append("HEAD")
    return ", ".join([*names, "OPTIONS"])


def _method_not_allowed(method: str, path: str, methods: dict[str, Handler]) -> ApiError:
    allowed = _allowed(methods)
    return ApiError(405, VALIDATION_ERROR, f"Method {method[:32]} not allowed on {path}; allowed: {allowed}",
                    {"Allow": allowed})


def _preflight(request: BaseRequest, methods: dict[str, Handler]) -> web.Response:
    """Answer a CORS preflight for a known path: any origin, this path's methods, the asked-for headers."""
    allowed = _allowed(methods)
    headers = {**CORS_ORIGIN, "Allow": allowed, "Access-Control-Allow-Methods": allowed,
               "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "Content-Type"),
               "Access-Control-Max-Age": "86400"}
    return web.Response(status=204, headers=headers)


async def _read_body(request: BaseRequest) -> bytes:
    """The whole JSON body, refusing more than MAX_BODY bytes whether announced by Content-Length or streamed.

    Like Fiber's BodyParser, only a media type ending in "json" is parsed as JSON; anything else
    (or none) is the contract's "Invalid request body format".
    """
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise too_large(MAX_BODY)
    if not request.headers.get("Content-Type", "").partition(";")[0].strip().lower().endswith("json"):
        raise INVALID_BODY
    return await read_limited(request, MAX_BODY)


async def read_limited(request: BaseRequest, limit: int) -> bytes:
    """The body (the request's client_max_size is `limit`); a too slow or broken body is a 4xx, not a 500."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    except BodyTimeout:
        raise ApiError(408, VALIDATION_ERROR, "Request body not received in time", close=True) from None
    except HttpProcessingError as exc:
        raise ApiError(400, VALIDATION_ERROR, f"Malformed request body: {exc.message}"[:200], close=True) from None


def too_large(limit: int) -> ApiError:
    return ApiError(413, VALIDATION_ERROR, f"Request body too large (limit {limit} bytes)")


def envelope_for_status(status: int, message: str) -> bytes:
    """The error body for an answer the HTTP layer decides (parser rejections, refusals)."""
    return error_body(VALIDATION_ERROR if status < 500 else UNKNOWN_ERROR, message)


def make_server(service: ProductService | Any, *, access_log: Sink | None, limits: Limits,
                capacity: Capacity | None = None, trace_response: str | None = None) -> GuardedServer:
    """aiohttp's low-level server around the service: its body limit, the hostile-client guard, and the outer layers.

    Outside the service, in this order: the server span (`trace_response` names the header that sends it
    back, else none is made), then capacity mode's queue and handler time (all but /health).
    """
    loop = asyncio.get_running_loop()
    max_body = service.max_body
    handlers = Handlers(capacity) if capacity is not None else None

    def request_factory(message, payload, protocol, writer, task) -> BaseRequest:  # type: ignore[no-untyped-def]
        protocol.request_started(payload)
        return BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=max_body)

    async def queued(request: BaseRequest, handlers: Handlers) -> web.StreamResponse:
        now = loop.time()
        turn = handlers.admit(now)
        if turn is None:
            return service.error_response(503, handlers.refusal)
        start, end = turn
        request[QUEUE_KEY] = start - now
        await asyncio.sleep(end - loop.time())
        return await service.handle(request)

    async def handle(request: BaseRequest) -> web.StreamResponse:
        try:
            if trace_response is not None:
                span = request[SPAN_KEY] = server_span(incoming(request.headers))
            if handlers is not None and not service.is_health(request.path):
                response = await queued(request, handlers)
            else:
                response = await service.handle(request)
            if trace_response is not None:
                response.headers[trace_response] = span.header_value()
            return response
        finally:
            request.protocol.request_finished()  # type: ignore[attr-defined]

    guard = Guard(limits, service.error_response, service.refusal)
    kwargs: dict[str, object] = {"access_log": None} if access_log is None else \
        {"access_log": access_log, "access_log_class": AccessLog, "access_log_format": ""}
    return GuardedServer(handle, guard=guard, request_factory=request_factory, **kwargs)
