"""An HTTP/1.1 proxy on 127.0.0.1 in front of the reference service that injects faults on demand.

The fault matrix (tests/test_fault_matrix.py) puts it between the load test and the service and
switches its mode while a run goes on. The mode is read for every request, not every connection,
so keep-alive connections of FastHttpUser see a switch at their next request.

Modes (what the client sees for each request):
  pass       forwarded to the service and its answer relayed unchanged
  refuse     the listener is closed and open connections are dropped: "connection refused", as if the
             service were killed; switching to another mode opens the same port again
  stall      the request is read and never answered (the connection stays open)
  slow       forwarded after `delay_s` seconds (set it beyond request_timeout_seconds for timeouts)
  reset      the request is read and the connection is reset (TCP RST)
  html       200 with an HTML error page (Content-Type text/html), as a misconfigured gateway sends
  truncated  200 application/json whose body is cut in the middle of the JSON (well-formed HTTP)
  cut        200 announcing a longer body than is sent, then the connection closes mid-body
  error500   500 with the contract's UNKNOWN_ERROR envelope

In a test: `with FaultProxy(service_port) as proxy: proxy.set_mode("slow", delay_s=2)`.
By hand: `python tests/fault_proxy.py --upstream-port 8082 --port 9000 --control-port 9001`, then
`curl 127.0.0.1:9001/mode/reset`, `curl '127.0.0.1:9001/mode/slow?delay_s=3'`, `curl 127.0.0.1:9001/stats`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import sys
import threading
from collections import Counter
from urllib.parse import parse_qs, urlsplit

MODES = ("pass", "refuse", "stall", "slow", "reset", "html", "truncated", "cut", "error500", "trickle")
MAX_HEAD = 65536

HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
             b"<body><h1>Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>")
TRUNCATED_JSON = b'{"status":"success","data":[{"name":"Laptop","description":"A lapt'
ERROR_500 = b'{"status":"error","error":{"code":"UNKNOWN_ERROR","message":"An internal server error occurred."}}'


def _response(status: str, content_type: str, body: bytes, length: int | None = None) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n")
    return head.encode("ascii") + body


CANNED = {
    "html": _response("200 OK", "text/html; charset=utf-8", HTML_PAGE),
    "truncated": _response("200 OK", "application/json", TRUNCATED_JSON),
    "cut": _response("200 OK", "application/json", TRUNCATED_JSON, length=len(TRUNCATED_JSON) * 4),
    "error500": _response("500 Internal Server Error", "application/json", ERROR_500),
}


class _Closed(Exception):
    """The peer closed its side or sent something this proxy does not speak."""


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    """The first line and the lower-cased headers of a request or response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as error:
        raise _Closed() from error


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The body announced by Content-Length or chunked encoding; relayed raw (framing kept)."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                parts.append(size_line)
                if size == 0:
                    while True:  # trailers up to the empty line
                        line = await reader.readuntil(b"\r\n")
                        parts.append(line)
                        if line == b"\r\n":
                            return b"".join(parts)
                parts.append(await reader.readexactly(size + 2))
        length = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as error:
        raise _Closed() from error


class FaultProxy:
    """A fault-injecting HTTP proxy with its own event loop in a daemon thread."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", port: int = 0,
                 mode: str = "pass", delay_s: float = 2.0, only_path: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.mode = mode
        self.delay_s = delay_s
        self.only_path = only_path  # faults only for request paths starting with this; the rest pass
        self.requests = Counter()  # mode -> requests seen while in that mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._control: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task] = set()

    # Control, from any thread -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._call(self._listen())
        if self.mode == "refuse":
            self._call(self._switch("refuse", None))
        return self

    def set_mode(self, mode: str, delay_s: float | None = None) -> None:
        """Switch the fault for every following request (refuse closes the port; any other mode reopens it)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        self._call(self._switch(mode, delay_s))

    def serve_control(self, port: int = 0) -> int:
        """Listen for `GET /mode/<mode>[?delay_s=S]` and `GET /stats` on 127.0.0.1; returns the port."""
        return self._call(self._listen_control(port))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _call(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # In the proxy's loop ------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True,
                                                  limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _switch(self, mode: str, delay_s: float | None) -> None:
        if delay_s is not None:
            self.delay_s = delay_s
        self.mode = mode
        if mode == "refuse":
            if self._server is not None:
                self._server.close()
                self._server = None
            for transport in list(self._clients):
                _reset(transport)
        elif self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        for server in (self._server, self._control):
            if server is not None:
                server.close()
        for transport in list(self._clients):
            transport.abort()
        for task in list(self._tasks):
            task.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        self._clients.add(transport)
        task = asyncio.current_task()
        self._tasks.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await _read_head(reader)
                request_line, headers = _headers(head)
                body = await _read_body(reader, headers)
                mode = self.mode
                if self.only_path is not None and not _path(request_line).startswith(self.only_path):
                    mode = "pass" if mode != "refuse" else mode
                self.requests[mode] += 1
                if mode == "refuse":  # a request that raced the switch
                    _reset(transport)
                    return
                if mode == "stall":
                    while await reader.read(65536):  # never answer; wait for the client to give up
                        pass
                    transport.abort()
                    return
                if mode == "reset":
                    _reset(transport)
                    return
                if mode in CANNED:
                    writer.write(CANNED[mode])
                    await writer.drain()
                    if mode == "cut":
                        writer.close()
                        return
                    continue
                if mode == "slow":
                    await asyncio.sleep(self.delay_s)
                upstream = upstream or await self._connect_upstream()
                answer, keep = await self._forward(upstream, head + body, request_line.split(" ", 1)[0])
                if mode == "trickle":  # the real answer, one byte every delay_s: every read succeeds, none ends
                    for index in range(len(answer)):
                        writer.write(answer[index:index + 1])
                        await writer.drain()
                        await asyncio.sleep(self.delay_s)
                else:
                    writer.write(answer)
                await writer.drain()
                if not keep:
                    upstream[1].close()
                    upstream = None
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    return
        except (_Closed, ConnectionError, OSError):
            _reset(transport)
        except asyncio.CancelledError:
            transport.abort()
        finally:
            self._clients.discard(transport)
            self._tasks.discard(task)
            if upstream is not None:
                upstream[1].close()

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(*self.upstream, limit=MAX_HEAD)
        except OSError as error:  # the service is down: the client's connection is dropped
            raise _Closed() from error

    async def _forward(self, upstream, request: bytes, method: str) -> tuple[bytes, bool]:
        """Send one request upstream; (the raw answer, whether the upstream connection stays usable)."""
        up_reader, up_writer = upstream
        up_writer.write(request)
        try:
            await up_writer.drain()
        except ConnectionError as error:
            raise _Closed() from error
        head = await _read_head(up_reader)
        status_line, headers = _headers(head)
        status = int(status_line.split(" ")[1])
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_body(up_reader, headers)
        else:
            body = await up_reader.read()  # delimited by the end of the connection
            return head + body, False
        return head + body, headers.get("connection", "").lower() != "close"

    async def _listen_control(self, port: int) -> int:
        self._control = await asyncio.start_server(self._control_client, "127.0.0.1", port)
        return self._control.sockets[0].getsockname()[1]

    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await _read_head(reader)
        except _Closed:
            writer.close()
            return
        target = head.split(b" ")[1].decode("latin-1") if head.count(b" ") >= 2 else "/"
        parts = urlsplit(target)
        status, answer = "200 OK", {}
        if parts.path.startswith("/mode/"):
            mode = parts.path.removeprefix("/mode/")
            delay = parse_qs(parts.query).get("delay_s", [None])[0]
            if mode in MODES:
                await self._switch(mode, float(delay) if delay else None)
                answer = {"mode": self.mode, "delay_s": self.delay_s}
            else:
                status, answer = "400 Bad Request", {"error": f"unknown mode {mode!r}", "modes": list(MODES)}
        elif parts.path == "/stats":
            answer = {"mode": self.mode, "delay_s": self.delay_s, "requests": dict(self.requests)}
        else:
            status, answer = "404 Not Found", {"error": "use /mode/<mode> or /stats"}
        writer.write(_response(status, "application/json", json.dumps(answer).encode()))
        await writer.drain()
        writer.close()


def _path(request_line: str) -> str:
    parts = request_line.split(" ")
    return parts[1] if len(parts) > 1 else ""


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with SO_LINGER 0 so the peer sees a TCP reset, not an orderly close."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Fault-injecting HTTP proxy in front of the reference service.")
    parser.add_argument("--upstream-port", type=int, required=True, help="port of the service on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--control-port", type=int, default=0, help="control port (0: a free one)")
    parser.add_argument("--mode", choices=MODES, default="pass")
    parser.add_argument("--delay-s", type=float, default=2.0, help="delay of the slow mode")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream_port, port=args.port, mode=args.mode, delay_s=args.delay_s).start()
    control = proxy.serve_control(args.control_port)
    print(f"proxy on {proxy.url} -> 127.0.0.1:{args.upstream_port}; control on http://127.0.0.1:{control}",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
