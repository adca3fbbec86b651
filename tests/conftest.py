"""Shared fixtures: free ports and the real reference product-service as a subprocess."""
from __future__ import annotations

# Locust (gevent) must monkey-patch before requests/urllib3/influxdb_client are imported anywhere.
import locust  # noqa: F401

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadsuite.cli.ports import free_port  # noqa: F401 - the tests import it from here

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# The interrupt tests press Ctrl-C as a user does (SIGINT to run_tests.sh or Locust). A shell without job control
# starts background jobs with SIGINT ignored (`nohup ... &`, some CI runners), and an ignored signal stays
# ignored across exec and cannot be trapped by bash: every process the tests start would then ignore the user's
# Ctrl-C. Children get the terminal's default instead (a Python handler becomes SIG_DFL across exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class ServiceHandle:
    """A running reference product-service started by a test."""

    proc: subprocess.Popen
    port: int
    db_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def start_service(tmp_path: Path, *args: str, port: int | None = None, timeout: float = 20.0) -> ServiceHandle:
    """Start `python -m product_service` on a free port with a fresh database; wait for its banner."""
    port = port or free_port()
    db_path = tmp_path / f"products-{port}.db"
    cmd = [PYTHON, "-m", "product_service", "--host", "127.0.0.1", "--port", str(port),
           "--db", str(db_path), "--reset", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on http://" in line:
            # Keep draining output so the service never blocks on a full pipe.
            import threading
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return ServiceHandle(proc=proc, port=port, db_path=db_path)
    proc.kill()
    proc.wait(timeout=5)
    raise RuntimeError(f"product_service did not start: {''.join(lines)[-2000:]}")


@pytest.fixture
def service_factory(tmp_path):
    """Start reference services with extra flags; all are stopped at teardown."""
    started: list[ServiceHandle] = []

    def factory(*args: str, port: int | None = None) -> ServiceHandle:
        handle = start_service(tmp_path, *args, port=port)
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        handle.stop()


@pytest.fixture
def product_service(service_factory) -> ServiceHandle:
    """A fresh reference service with a freshly seeded database."""
    return service_factory()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    """Tests talk to loopback only; a proxy in the environment must not intercept them."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
