"""The one client that talks to the target outside Locust's request path: health, stock snapshots, setup.

Every call has a total deadline, not only a per-read timeout: a target that answers one byte at a
time cannot hold a phase of the run (start snapshot, contention setup, end snapshot, health check)
beyond it. The response is read with a size cap, then parsed by the standard library's HTTP parser.
Works with and without gevent's monkey-patching (under Locust every wait yields to other greenlets).
"""
from __future__ import annotations

import io
import json
import socket
import ssl
import time
from http.client import HTTPException, HTTPResponse
from typing import Any
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024  # status line and headers
DEFAULT_DEADLINE_S = 5.0


class ServiceError(Exception):
    """The target did not give a usable answer; the text says why in one line."""


class _Bytes(io.BytesIO):
    def makefile(self, *_args, **_kwargs):  # HTTPResponse reads its "socket" through makefile()
        return self


class ServiceClient:
    """GET/PATCH/POST against base_url with a total deadline per call."""

    def __init__(self, base_url: str, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.deadline_s = deadline_s
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._host_header = parts.netloc.rpartition("@")[2]

    def request(self, method: str, path: str, body: Any = None, deadline_s: float | None = None) -> tuple[int, bytes]:
        """(status, body bytes); ServiceError when no complete answer arrives before the deadline."""
        deadline = time.monotonic() + (self.deadline_s if deadline_s is None else deadline_s)
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}", "Connection: close",
                "Accept: application/json", "User-Agent: loadsuite-service-client"]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        raw = self._exchange(("\r\n".join(head) + "\r\n\r\n").encode() + payload, deadline, f"{method} {path}")
        response = HTTPResponse(_Bytes(raw), method=method)  # type: ignore[arg-type]
        try:
            response.begin()
            return response.status, response.read()
        except (HTTPException, ValueError) as error:
            raise ServiceError(f"{method} {path}: malformed HTTP response ({error.__class__.__name__})") from None

    def _exchange(self, request: bytes, deadline: float, what: str) -> bytes:
        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceError(f"{what}: no complete answer within {self.deadline_s:g} s")
            return left

        try:
            sock = socket.create_connection((self._host, self._port), timeout=remaining())
        except ConnectionRefusedError:
            raise ServiceError(f"{what}: connection refused: nothing listens there") from None
        except socket.timeout:
            raise ServiceError(f"{what}: connecting timed out after {self.deadline_s:g} s") from None
        except OSError as error:
            raise ServiceError(f"{what}: cannot connect ({error.strerror or error.__class__.__name__})") from None
        chunks, size = [], 0
        framing = _Framing(what)
        try:
            if self._tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(remaining())
            sock.sendall(request)
            while True:
                sock.settimeout(remaining())
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ServiceError(f"{what}: answer larger than {MAX_RESPONSE_BYTES // 2**20} MiB")
                if framing.complete(chunks, size):
                    break
        except socket.timeout:
            raise ServiceError(f"{what}: no complete answer within {self.deadline_s:g} s") from None
        except ssl.SSLError as error:
            raise ServiceError(f"{what}: TLS failed ({error.reason or error.__class__.__name__})") from None
        except OSError as error:
            raise ServiceError(f"{what}: connection failed ({error.strerror or error.__class__.__name__})") from None
        finally:
            sock.close()
        return b"".join(chunks)

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

    def set_stock(self, name: str, stock: int, deadline_s: float | None = None) -> str:
        """PATCH /products/stock: "ok", "rejected" (4xx: certainly not applied) or "failed" (unknown)."""
        try:
            status, _ = self.request("PATCH", "/products/stock", {"name": name, "stock": stock}, deadline_s)
        except ServiceError:
            return "failed"
        if status == 200:
            return "ok"
        return "rejected" if 400 <= status < 500 else "failed"


class _Framing:
    """Whether the answer is complete: the head and a Content-Length body have arrived (else it is read until the
    peer closes). The head is looked for in what arrived until it is found, then only the size is compared: an
    answer of many chunks costs linear time, never a join of everything per chunk."""

    __slots__ = ("_what", "_body_at", "_length")

    def __init__(self, what: str) -> None:
        self._what = what
        self._body_at: int | None = None  # where the body starts, once the head has arrived
        self._length: int | None = None  # its Content-Length, if it has one

    def complete(self, chunks: list[bytes], size: int) -> bool:
        if self._body_at is None:
            if size > MAX_HEAD_BYTES and len(chunks) > 1:
                data = b"".join(chunks)[:MAX_HEAD_BYTES + 4]
            else:
                data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if size > MAX_HEAD_BYTES:
                    raise ServiceError(f"{self._what}: answer head longer than {MAX_HEAD_BYTES // 1024} KiB")
                return False
            self._body_at = end + 4
            for line in data[:end].split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    try:
                        self._length = int(value.strip())
                    except ValueError:
                        self._length = None
                    break
        return self._length is not None and size - self._body_at >= self._length


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
