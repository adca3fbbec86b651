"""Defences against hostile clients, for both profiles.

- Read deadlines: a request head must arrive within `header_timeout` of its first byte (or of the
  connection opening), a body within `body_timeout` of its head; slow clients are cut off.
- A cap on open connections below the process's file limit (RLIMIT_NOFILE minus a margin for the
  database, stdio and the listening socket). At the cap a new connection takes the place of the
  oldest one that is waiting for a request head or idle between requests; if every connection is
  inside a request, the new one is answered 503 and closed.
- Accept errors (EMFILE and friends) are logged once, then counted, instead of one traceback each.
- The HTTP layer's own rejections (bad request line, oversized headers, ...) answer in the JSON
  error envelope like every other 4xx.
"""
from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_request import BaseRequest

HEADER_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 10.0
ACCEPT_BURST = 16  # sockets asyncio accepts per loop tick
# Files besides connections: database (3), stdio, epoll, the signal pipe, the listening socket; plus the
# sockets of the accept bursts in flight and of connections closed this tick but not yet released.
FD_MARGIN = 64
SWEEP_S = 0.5  # how often deadlines are checked: a cut-off happens up to this much late
ACCEPT_LOG_EVERY_S = 60.0
MAX_PARSER_MESSAGE = 200
log = logging.getLogger("product_service")

ErrorResponse = Callable[[int, str], web.Response]


def default_max_connections() -> int:
    """The soft open-file limit minus FD_MARGIN (at least 1)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(1, soft - FD_MARGIN)


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = HEADER_TIMEOUT_S  # 0 turns it off
    body_timeout: float = BODY_TIMEOUT_S  # 0 turns it off
    max_connections: int | None = None  # None: default_max_connections()


class BodyTimeout(TimeoutError):
    """The request body did not arrive within the body timeout (a TimeoutError, so aiohttp drains quietly)."""


class GuardedConnection(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol plus the bookkeeping the Guard needs: when a head or body started to arrive."""

    __slots__ = ("guard", "head_since", "in_request", "data_in_request", "payload", "payload_since")

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.head_since: float | None = None  # waiting for a request head since then
        self.in_request = False
        self.data_in_request = False
        self.payload: StreamReader | None = None
        self.payload_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.head_since = self._loop.time()
        self.guard.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.in_request:
            self.data_in_request = True  # may be the start of a pipelined head
        elif self.head_since is None:
            self.head_since = self._loop.time()
        super().data_received(data)

    def request_started(self, payload: StreamReader) -> None:
        self.head_since = None
        self.in_request = True
        self.data_in_request = False
        self.payload = payload
        self.payload_since = self._loop.time()

    def request_finished(self) -> None:
        self.in_request = False
        self.payload = None
        if self.data_in_request:
            self.head_since = self._loop.time()

    def check(self, now: float, limits: Limits) -> None:
        """Cut off a head that is too slow; fail a body that is too slow (its reader answers 408)."""
        if self.head_since is not None and limits.header_timeout and now - self.head_since > limits.header_timeout:
            self.guard.cut_off += 1
            self.cut()
        elif (self.payload is not None and limits.body_timeout and now - self.payload_since > limits.body_timeout
              and not self.payload.is_eof() and self.payload.exception() is None):
            self.payload.set_exception(BodyTimeout())

    def cut(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The HTTP layer's own errors in the JSON envelope; a client's malformed request is not worth a traceback."""
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            text = "An internal server error occurred."
        else:
            log.debug("malformed request from %s: %s", request.remote, exc)
            text = "Malformed HTTP request: " + " ".join(str(message or exc or "").split())[:MAX_PARSER_MESSAGE]
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = self.guard.error_response(status, text)
        response.force_close()
        return response


class Guard:
    """The open connections, their cap, and the periodic sweep that enforces the read deadlines."""

    def __init__(self, limits: Limits, error_response: ErrorResponse, refusal: bytes) -> None:
        self.limits = limits
        self.max_connections = limits.max_connections or default_max_connections()
        self.error_response = error_response
        self._refusal = refusal
        self._open: dict[GuardedConnection, None] = {}  # insertion order: oldest first
        self._timer: asyncio.TimerHandle | None = None
        self.cut_off = 0
        self.evicted = 0
        self.refused = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def opened(self, conn: GuardedConnection) -> None:
        if len(self._open) >= self.max_connections:
            victim = self._victim()
            if victim is None:
                self.refused += 1
                if conn.transport is not None:
                    conn.transport.write(self._refusal)
                    conn.transport.close()
                return
            self.evicted += 1
            self._open.pop(victim, None)
            victim.cut()
        self._open[conn] = None

    def _victim(self) -> GuardedConnection | None:
        """The oldest connection waiting for a request head, else the oldest idle one, else None."""
        idle = None
        for conn in self._open:
            if conn.head_since is not None:
                return conn
            if idle is None and not conn.in_request:
                idle = conn
        return idle

    def closed(self, conn: GuardedConnection) -> None:
        self._open.pop(conn, None)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(SWEEP_S, self._sweep, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in list(self._open):
            conn.check(now, self.limits)
        self._timer = loop.call_later(SWEEP_S, self._sweep, loop)


class GuardedServer(web.Server):
    """aiohttp's low-level server whose connections are GuardedConnections."""

    def __init__(self, handler: Any, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(self, guard=self.guard, loop=self._loop, **self._kwargs)


def raw_response(status: int, reason: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 response written straight to a transport that never got a request object."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class AcceptErrors:
    """The loop's exception handler: accept failures logged once, then as a count at most once a minute."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.count = 0
        self._reported = 0
        self._last_report = 0.0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "_start_serving" in message and isinstance(context.get("exception"), ValueError):
            return  # asyncio's accept retry timer firing after shutdown closed the listening socket: harmless
        if not message.startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = loop.time()
        if self.count == 1:
            log.warning("accept failed: %s; new connections wait in the listen backlog and accepting resumes "
                        "within a second; further accept errors are counted (lower --max-connections or raise "
                        "the open-file limit)", context.get("exception"))
            self._reported, self._last_report = 1, now
        elif now - self._last_report >= ACCEPT_LOG_EVERY_S:
            self.report()

    def report(self) -> None:
        """Log the accept errors since the last line, if any."""
        if self.count > self._reported:
            log.warning("accept failed %d more times (%d in total)", self.count - self._reported, self.count)
            self._reported, self._last_report = self.count, self._loop.time()
