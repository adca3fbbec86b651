"""Hostile clients against both profiles: slow heads and bodies, connection floods under a file limit, malformed HTTP."""
from __future__ import annotations

import http.client
import json
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT

PROFILES = ["contract", "go"]


class Service:
    """`python -m product_service` on a free port with its stderr in a file, optionally under a file limit."""

    def __init__(self, tmp_path: Path, *args: str, nofile: int | None = None) -> None:
        self.log_path = tmp_path / f"service-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        preexec: Callable[[], None] | None = None
        if nofile is not None:
            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "product_service", "--port", "0", "--db", str(tmp_path / f"p-{time.monotonic_ns()}.db"),
             "--reset", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True, preexec_fn=preexec)
        banner = self.proc.stdout.readline().strip()
        if not banner.startswith("listening on http://"):
            self.stop()
            raise AssertionError(f"no banner: {banner!r} {self.log()}")
        self.port = int(banner.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def start(tmp_path):
    started: list[Service] = []

    def factory(*args: str, nofile: int | None = None) -> Service:
        service = Service(tmp_path, *args, nofile=nofile)
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()


def get(port: int, path: str = "/health", timeout: float = 5.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes the socket (sending `trickle` a byte every 0.1 s meanwhile), or None."""
    start = time.monotonic()
    sock.settimeout(0.1)
    for byte in trickle or b"\0" * int(seconds * 10):
        if time.monotonic() - start > seconds:
            return None
        if trickle:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


# --- read deadlines --------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_head_sent_a_byte_at_a_time_is_cut_off_after_the_header_timeout(start, profile):
    service = start("--profile", profile, "--header-timeout", "1")
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200))
        elapsed = closed_within(sock, 6.0, trickle=head)
    assert elapsed is not None and 0.9 <= elapsed <= 3.0, elapsed
    assert get(service.port) == (200, {"status": "ok"})


def test_connection_that_never_sends_is_closed_after_the_header_timeout(start):
    service = start("--header-timeout", "1")
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        elapsed = closed_within(sock, 6.0)
    assert elapsed is not None and 0.9 <= elapsed <= 3.0, elapsed


def test_idle_keep_alive_connection_outlives_the_header_timeout(start):
    service = start("--header-timeout", "1")
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
    try:
        for _ in range(2):
            conn.request("GET", "/health")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b'{"status":"ok"}'
            time.sleep(1.6)  # idle between requests is the keep-alive timeout's business, not the head's
        conn.request("GET", "/products")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("profile", PROFILES)
def test_body_slower_than_the_body_timeout_is_408_in_the_error_envelope(start, profile):
    service = start("--profile", profile, "--body-timeout", "1")
    head = (b"POST /products/details HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"name\": ")
    started = time.monotonic()
    status, headers, body = parse_response(raw_exchange(service.port, head, timeout=6))
    assert 0.9 <= time.monotonic() - started <= 4.0
    assert status == 408 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "error", "error": {"code": "VALIDATION_ERROR",
                                                             "message": "Request body not received in time"}}
    assert "Traceback" not in service.log()


def test_help_documents_the_hardening_flags_and_their_defaults():
    result = subprocess.run([PYTHON, "-m", "product_service", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    text = " ".join(result.stdout.split())
    for needle in ("--header-timeout S", "(default 5; 0 off)", "--body-timeout S", "(default 10; 0 off)",
                   "--max-connections N", "open-file limit minus 64", "--profile {contract,go}"):
        assert needle in text, needle


# --- the HTTP layer's own 4xx -----------------------------------------------------------------------

MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "unknown HTTP version": b"GET /health HTTP/9.9\r\n\r\n",
    "oversized header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "oversized request line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without colon": b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
    "bad content length": b"POST /products/details HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "bad chunk size": (b"POST /products/details HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    "control character in header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n",
}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_malformed_request_is_answered_4xx_in_the_json_error_envelope(start, profile):
    service = start("--profile", profile)
    for case, data in MALFORMED.items():
        status, headers, body = parse_response(raw_exchange(service.port, data))
        assert 400 <= status < 500, (case, status)
        assert headers.get("content-type") == "application/json", (case, headers)
        envelope = json.loads(body)
        assert envelope["status"] == "error" and envelope["error"]["code"] == "VALIDATION_ERROR", (case, envelope)
        assert set(envelope) == {"status", "error"} and envelope["error"]["message"], case
    assert get(service.port)[0] == 200
    log = service.log()
    assert "Traceback" not in log and len(log.splitlines()) <= 2, log[-3000:]


# --- connection cap under a file limit ----------------------------------------------------------------

def open_slow_clients(port: int, count: int) -> list[socket.socket]:
    """Connections that send half a request head and then nothing (they would hold a slot forever)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    return socks


@pytest.mark.e2e
@pytest.mark.parametrize("profile", PROFILES)
def test_health_keeps_answering_while_more_slow_clients_than_file_descriptors_hold_connections(start, profile):
    # Scaled down from 1,100 slow clients against a 1,024 file limit: 300 against 256.
    service = start("--profile", profile, "--header-timeout", "120", nofile=256)
    socks = open_slow_clients(service.port, 300)
    try:
        assert len(socks) >= 280
        for _ in range(5):
            started = time.monotonic()
            assert get(service.port, timeout=3) == (200, {"status": "ok"})
            assert time.monotonic() - started < 2.0
        socks += open_slow_clients(service.port, 50)  # the flood goes on
        assert get(service.port, timeout=3)[0] == 200
    finally:
        for sock in socks:
            sock.close()
    log = service.log()
    assert "Traceback" not in log and len(log.splitlines()) <= 3, log[-3000:]


@pytest.mark.e2e
def test_accept_errors_beyond_the_file_limit_are_logged_once_with_a_count(start):
    service = start("--header-timeout", "120", "--max-connections", "5000", nofile=256)
    socks = open_slow_clients(service.port, 300)  # the last ~70 wait in the backlog while accept fails
    try:
        time.sleep(1.5)
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if get(service.port, timeout=2)[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail("the service did not recover once the slow clients left")
    service.stop()
    log = service.log()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("accept failed:") == 1, log[-3000:]
    assert "Too many open files" in log
    assert "more times" in log and "in total" in log  # the count, reported at shutdown
    assert len(log.splitlines()) <= 4, log
