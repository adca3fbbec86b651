"""Real servers for the monitoring tests: VictoriaMetrics (speaks InfluxDB's /api/v2/write), a slow or
token-echoing fake metrics server, and a tiny JSON target to load-test. All run as subprocesses."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port

VICTORIA_METRICS = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.read()


def _wait_until_up(proc: subprocess.Popen, url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before answering {url}")
        try:
            _get(url, timeout=1.0)
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=5)
    raise RuntimeError(f"{proc.args[0]} did not answer {url} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class VictoriaMetrics:
    """A victoria-metrics process on a free loopback port with its own data folder."""

    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, data_dir: Path) -> "VictoriaMetrics":
        port = free_port()
        proc = subprocess.Popen(
            [VICTORIA_METRICS, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data_dir}",
             "-loggerLevel=ERROR", "-search.latencyOffset=0s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = cls(proc, port)
        _wait_until_up(proc, f"{server.url}/health")
        return server

    def export(self, match: str = '{__name__=~"locust.*"}') -> list[dict]:
        """Every stored sample series matching `match` (after making pending rows readable)."""
        _get(f"{self.url}/internal/force_flush")
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        body = _get(f"{self.url}/api/v1/export?{query}")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def query(self, path: str, **params) -> list[dict]:
        """The result list of a Prometheus-API query (/api/v1/query or query_range), bypassing VM's cache."""
        _get(f"{self.url}/internal/force_flush")
        body = json.loads(_get(f"{self.url}{path}?{urllib.parse.urlencode({**params, 'nocache': '1'})}"))
        assert body["status"] == "success", body
        return body["data"]["result"] if isinstance(body["data"], dict) else body["data"]

    def kill(self) -> None:
        """Die abruptly, as a crashed metrics server would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        _stop(self.proc)


_FAKE_SERVER = r'''
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
mode, delay, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self._answer(200, b'{"ok": true}')
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(delay)
        if mode == "echo401":  # a hostile server: echoes the credentials back in its error body
            self._answer(401, ('{"message": "bad token: %s"}' % self.headers.get("Authorization")).encode())
        elif mode in ("endless200", "endless500"):  # announces 4 GiB and sends until the client hangs up
            try:
                self.send_response(200 if mode == "endless200" else 500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(4 << 30))
                self.end_headers()
                block = b"x" * 65536
                for _ in range((1 << 30) // len(block)):
                    self.wfile.write(block)
            except OSError:
                pass
            self.close_connection = True
        else:
            self._answer(204, b"")
    def _answer(self, status, body):
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass
    def log_message(self, *args):
        pass
ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("listening", flush=True)
server.serve_forever()
'''

_TARGET = r'''
import asyncio, sys
from aiohttp import web
port = int(sys.argv[1])
BODY = b'[{"name": "Laptop", "category": "Electronics", "price": 999.0, "stock": 10}]'
async def ok(request):
    return web.Response(body=BODY, content_type="application/json")
async def fail(request):
    return web.json_response({"error": "boom"}, status=500)
async def slow(request):
    await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_get("/products", ok)
app.router.add_get("/slow", slow)
app.router.add_get("/fail", fail)
app.router.add_get("/health", ok)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
'''


@dataclass
class Process:
    """A helper HTTP server subprocess on a free loopback port."""

    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.proc)


def start_fake_metrics_server(mode: str = "slow", delay: float = 3.0) -> Process:
    """A metrics server that answers every write after `delay` seconds (mode slow), with 401 (echo401), or with a
    200 or a 500 whose body never ends (endless200, endless500)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _FAKE_SERVER, mode, str(delay), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_until_up(proc, f"http://127.0.0.1:{port}/ready")
    return Process(proc, port)


def start_target() -> Process:
    """A JSON target: GET /products answers 200 at once, /slow?ms=N after N ms, GET /fail answers 500."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _TARGET, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_until_up(proc, f"http://127.0.0.1:{port}/health")
    return Process(proc, port)
