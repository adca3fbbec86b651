"""The one client that talks to the target outside Locust's request path: health, stock snapshots, setup.

urllib3 (the monitoring writer's client too), one connection per call, no redirects followed, no retries.
Every call has a total deadline, not only a per-read timeout: a watchdog closes the connection when it
passes, so a target that answers one byte at a time cannot hold a phase of the run (start snapshot,
contention setup, end snapshot, health check) beyond it. Answers are bounded: the head by the standard
library's parser (100 header lines of at most 64 KiB), the body at MAX_RESPONSE_BYTES, read as it arrives.
Works with and without gevent's monkey-patching (under Locust every wait yields to other greenlets).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError, SSLError

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_DEADLINE_S = 5.0
_CHUNK = 65536


class ServiceError(Exception):
    """The target did not give a usable answer; the text says why in one line."""


class ServiceClient:
    """GET/PATCH/POST against base_url with a total deadline per call."""

    def __init__(self, base_url: str, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.deadline_s = deadline_s
        self._connection = HTTPSConnection if parts.scheme == "https" else HTTPConnection
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")

    def request(self, method: str, path: str, body: Any = None, deadline_s: float | None = None) -> tuple[int, bytes]:
        """(status, body bytes); ServiceError when no complete answer arrives before the deadline."""
        budget = self.deadline_s if deadline_s is None else deadline_s
        what = f"{method} {path}"
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "Connection": "close",
                   "User-Agent": "loadsuite-service-client"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection(self._host, self._port, timeout=budget)
        watchdog = _Watchdog(conn, budget)
        try:
            watchdog.start()
            conn.connect()  # bounded by its own timeout; the watchdog bounds everything after it
            if watchdog.fired:
                raise TimeoutError("timed out")
            conn.request(method, self._prefix + path, body=payload, headers=headers, preload_content=False,
                         decode_content=False)
            response = conn.getresponse()
            chunks, size = [], 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ServiceError(f"{what}: answer larger than {MAX_RESPONSE_BYTES // 2**20} MiB")
                chunks.append(chunk)
            return response.status, b"".join(chunks)
        except ServiceError:
            raise
        except Exception as error:  # whatever the transport raised, worded in one line
            raise ServiceError(f"{what}: {_why(error, watchdog.fired, budget)}") from None
        finally:
            watchdog.cancel()
            conn.close()

    # What the suite asks of the service --------------------------------------------------------

    def health(self, deadline_s: float | None = None) -> None:
        """GET /health answers 200, else ServiceError saying why."""
        status, _ = self.request("GET", "/health", deadline_s=deadline_s)
        if status != 200:
            raise ServiceError(f"GET /health answered {status}")

    def stock_levels(self, deadline_s: float | None = None) -> dict[str, int]:
        """{name: stock} from GET /products."""
        status, body = self.request("GET", "/products", deadline_s=deadline_s)
        if status != 200:
            raise ServiceError(f"GET /products answered {status}")
        try:
            stock = {product["name"]: product["stock"] for product in json.loads(body)["data"]}
        except (ValueError, KeyError, TypeError):
            raise ServiceError("GET /products: unexpected body (no data list of products with name and stock)") from None
        if any(type(value) is not int for value in stock.values()):
            raise ServiceError("GET /products returned a non-integer stock")
        return stock

    def set_stock(self, name: str, stock: int, deadline_s: float | None = None) -> int | None:
        """PATCH /products/stock: the answer's status, or None when no answer came (oracle.stock_update_outcome
        tells what either means)."""
        try:
            status, _ = self.request("PATCH", "/products/stock", {"name": name, "stock": stock}, deadline_s)
        except ServiceError:
            return None
        return status


class _Watchdog:
    """Closes a connection when the call's total deadline passes (a thread, or a greenlet under gevent)."""

    def __init__(self, conn: HTTPConnection, seconds: float) -> None:
        self._conn, self.fired = conn, False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except OSError:
                pass


def _why(error: BaseException, deadline_passed: bool, budget: float) -> str:
    """One line for a failed call: the deadline, a refused or failed connection, an answer too long to parse."""
    if deadline_passed or isinstance(error, (socket.timeout, ReadTimeoutError)) or "timed out" in str(error):
        if isinstance(error, OSError) and "connect" in str(error).lower():
            return f"connecting timed out after {budget:g} s"
        return f"no complete answer within {budget:g} s"
    cause = error
    while cause.__context__ is not None and isinstance(cause, HTTPError):
        cause = cause.__context__
    if isinstance(cause, ConnectionRefusedError) or "Connection refused" in str(error):
        return "connection refused: nothing listens there"
    if isinstance(cause, HTTPException) or isinstance(error, HTTPException):
        text = str(cause)
        if "more than" in text and "headers" in text or "line" in type(cause).__name__.lower():
            return "answer head too long (over 100 header lines or a line over 64 KiB)"
        return f"malformed HTTP response ({type(cause).__name__})"
    if isinstance(error, SSLError):
        return "TLS failed"
    if isinstance(error, ProtocolError):
        return f"connection failed ({type(cause).__name__})"
    if isinstance(cause, OSError):
        return f"connection failed ({cause.strerror or type(cause).__name__})"
    return f"connection failed ({type(cause).__name__})"


def snapshot_stock(base_url: str | None, deadline_s: float = DEFAULT_DEADLINE_S, attempts: int = 3
                   ) -> tuple[dict[str, int] | None, str | None]:
    """({name: stock}, None) or (None, reason); all attempts together stay within deadline_s."""
    if not base_url:
        return None, "no host known (give --host)"
    client = ServiceClient(base_url, deadline_s)
    deadline = time.monotonic() + deadline_s
    reason = "not tried"
    for attempt in range(attempts):
        left = deadline - time.monotonic()
        if left <= 0.05:
            break
        try:
            return client.stock_levels(deadline_s=left), None
        except ServiceError as error:
            reason = str(error)
            if "unexpected body" in reason or "non-integer" in reason:
                break
        if attempt + 1 < attempts:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return None, reason


def first_product_name(base_url: str, deadline_s: float = DEFAULT_DEADLINE_S) -> str | None:
    """The first catalogue name in sorted order (the same on every worker), or None."""
    stock, _ = snapshot_stock(base_url, deadline_s, attempts=3)
    return min(stock) if stock else None
