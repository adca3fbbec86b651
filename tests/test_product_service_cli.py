"""The reference service's command line: flags, environment equivalents, faults, startup errors, shutdown."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT, free_port

from product_service.capacity import MAX_HONEST_RPS

CATALOG = json.loads((ROOT / "product_service" / "catalog.json").read_text(encoding="utf-8"))
SERVICE_ENV_KEYS = ("PRODUCT_SERVICE_PORT", "SIMULATE_DELAY_ENABLED", "SIMULATE_DELAY_MIN_MS", "SIMULATE_DELAY_MAX_MS",
                    "XDG_CACHE_HOME")


def service_env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV_KEYS}
    env["PYTHONPATH"] = str(ROOT)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Running:
    """A service started with exactly the given flags and environment (no fixture defaults)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen([PYTHON, "-m", "product_service", *args], cwd=cwd, env=env or service_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.banner = self.proc.stdout.readline().strip()  # blocks until the banner or exit
        if not self.banner.startswith("listening on http://"):
            self.stop()
            raise AssertionError(f"no banner: {self.banner!r} {self.proc.stderr.read()}")
        self.url = self.banner.removeprefix("listening on ")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def running():
    started: list[Running] = []

    def start(*args: str, **kwargs) -> Running:
        handle = Running(*args, **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


def fetch(url: str, method: str = "GET", payload=None, timeout: float = 15) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def timed(url: str) -> float:
    start = time.perf_counter()
    fetch(url)
    return time.perf_counter() - start


def fails_to_start(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    """Run a start that must fail: exit 2, one line on stderr naming the problem, nothing on stdout."""
    result = subprocess.run([PYTHON, "-m", "product_service", *args], cwd=cwd, env=env or service_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("product_service: error: "), result.stderr
    return lines[0]


# --- startup errors ----------------------------------------------------------------------------

def test_port_in_use_exits_2_with_one_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        line = fails_to_start("--port", str(port), "--db", str(tmp_path / "p.db"))
    assert f"port {port}" in line and "already in use" in line and "--port" in line


@pytest.mark.parametrize("args, needle", [
    (["--nope"], "unrecognized arguments: --nope"), (["--port", "70000"], "invalid port"),
    (["--port", "http"], "invalid port"), (["--error-rate", "1.5"], "--error-rate"),
    (["--error-rate", "lots"], "--error-rate"), (["--latency-ms", "80:20"], "--latency-ms"),
    (["--latency-ms", "a:b"], "--latency-ms"), (["--latency-ms", "1:2:3"], "--latency-ms"),
    (["--latency-ms", "-5"], "--latency-ms"), (["--latency"], "unrecognized arguments"),
])
def test_bad_flag_exits_2_with_one_line(tmp_path, args, needle):
    assert needle in fails_to_start(*args, "--db", str(tmp_path / "p.db"))


@pytest.mark.parametrize("content, needle", [
    (None, "cannot read catalogue"), ("{not json", "not valid JSON"), ("[]", "non-empty JSON list"),
    ('{"products": []}', "product 'products' is not a JSON object"),
    ('[{"name": "A", "price": 1, "stock": -1, "category": "X"}]', "'stock'"),
    ('[{"name": "A", "price": 1, "stock": true, "category": "X"}]', "'stock'"),
    ('[{"name": "", "price": 1, "stock": 1, "category": "X"}]', "'name'"),
    ('[{"name": "A", "price": "1", "stock": 1, "category": "X"}]', "'price'"),
    ('[{"name": "A", "description": "", "price": 1, "stock": 1, "category": "X"},'
     ' {"name": "A", "description": "", "price": 2, "stock": 1, "category": "X"}]', "duplicate name"),
])
def test_unreadable_or_invalid_catalogue_exits_2(tmp_path, content, needle):
    catalog = tmp_path / "catalog.json"
    if content is not None:
        catalog.write_text(content, encoding="utf-8")
    line = fails_to_start("--port", "0", "--db", str(tmp_path / "p.db"), "--catalog", str(catalog))
    assert needle in line and str(catalog) in line


def test_database_path_that_is_a_directory_exits_2(tmp_path):
    assert "is a directory" in fails_to_start("--port", "0", "--db", str(tmp_path))


def test_database_under_a_regular_file_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "--db" in fails_to_start("--port", "0", "--db", str(blocker / "products.db"))


def test_file_that_is_not_a_database_exits_2(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not a sqlite database, just text " * 100)
    line = fails_to_start("--port", "0", "--db", str(bogus))
    assert "not a SQLite database" in line and bogus.read_bytes().startswith(b"this is not")


def test_database_with_a_foreign_products_table_asks_for_reset(tmp_path):
    db = tmp_path / "foreign.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT)")
    assert "--reset" in fails_to_start("--port", "0", "--db", str(db))


@pytest.mark.parametrize("env, needle", [
    ({"PRODUCT_SERVICE_PORT": "eighty"}, "PRODUCT_SERVICE_PORT"),
    ({"SIMULATE_DELAY_ENABLED": "maybe"}, "SIMULATE_DELAY_ENABLED"),
    ({"SIMULATE_DELAY_ENABLED": "true", "SIMULATE_DELAY_MIN_MS": "ten"}, "SIMULATE_DELAY_MIN_MS"),
    ({"SIMULATE_DELAY_ENABLED": "true", "SIMULATE_DELAY_MIN_MS": "90", "SIMULATE_DELAY_MAX_MS": "10"}, "MIN <= MAX"),
])
def test_bad_environment_value_exits_2(tmp_path, env, needle):
    assert needle in fails_to_start("--db", str(tmp_path / "p.db"), env=service_env(**env))


def test_help_lists_every_flag():
    result = subprocess.run([PYTHON, "-m", "product_service", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--db", "--catalog", "--reset", "--latency-ms", "--error-rate", "--unsafe-buy",
                 "--access-log", "--trace-response", "--handlers", "--service-time-ms", "--queue-limit"):
        assert flag in result.stdout
    text = " ".join(result.stdout.split())
    assert "except those to /health (which bypass the queue" in text
    assert f"Honest up to about {MAX_HONEST_RPS:.0f} requests/s" in text


# --- environment equivalents and defaults --------------------------------------------------------

def test_port_comes_from_product_service_port(running, tmp_path):
    port = free_port()
    service = running("--db", str(tmp_path / "p.db"), env=service_env(PRODUCT_SERVICE_PORT=str(port)))
    assert service.banner == f"listening on http://127.0.0.1:{port}"
    assert fetch(service.url + "/health") == (200, {"status": "ok"})


def test_port_flag_wins_over_environment(running, tmp_path):
    port = free_port()
    service = running("--port", str(port), "--db", str(tmp_path / "p.db"),
                      env=service_env(PRODUCT_SERVICE_PORT="1"))
    assert service.banner == f"listening on http://127.0.0.1:{port}"


def test_port_zero_picks_a_free_port_and_reports_it(running, tmp_path):
    service = running("--port", "0", "--db", str(tmp_path / "p.db"))
    port = int(service.url.rsplit(":", 1)[1])
    assert port > 0 and fetch(service.url + "/health")[0] == 200


def test_default_database_lives_under_xdg_cache_home(running, tmp_path):
    service = running("--port", "0", env=service_env(XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert fetch(service.url + "/health")[0] == 200
    assert (tmp_path / "cache" / "product-service" / "products.db").is_file()


def test_default_database_falls_back_to_dot_data_without_a_home(running, tmp_path):
    service = running("--port", "0", env=service_env(HOME=None), cwd=tmp_path)
    assert fetch(service.url + "/health")[0] == 200
    assert (tmp_path / ".data" / "products.db").is_file()


def test_custom_catalogue_seeds_a_new_database(running, tmp_path):
    catalog = tmp_path / "mine.json"
    products = [{"name": "Widget: Mk II", "description": "d", "price": 2.5, "stock": 9, "category": "Gadgets"},
                {"name": "Gizmo's Friend", "description": "", "price": 10, "stock": 1, "category": "Gadgets"}]
    catalog.write_text(json.dumps(products), encoding="utf-8")
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), "--catalog", str(catalog))
    status, body = fetch(service.url + "/products")
    assert status == 200 and sorted(p["name"] for p in body["data"]) == sorted(p["name"] for p in products)


# --- persistence, --reset, shutdown ----------------------------------------------------------------

@pytest.mark.e2e
def test_stock_persists_across_restarts_and_reset_reseeds(running, tmp_path):
    db = str(tmp_path / "p.db")
    name, seeded = CATALOG[0]["name"], CATALOG[0]["stock"]
    first = running("--port", "0", "--db", db)
    assert fetch(first.url + "/products/stock", "PATCH", {"name": name, "stock": 3})[0] == 200
    assert first.stop() == 0
    second = running("--port", "0", "--db", db)
    assert fetch(second.url + "/products/details", "POST", {"name": name})[1]["data"]["stock"] == 3
    assert second.stop() == 0
    third = running("--port", "0", "--db", db, "--reset")
    assert fetch(third.url + "/products/details", "POST", {"name": name})[1]["data"]["stock"] == seeded


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_in_flight_requests_and_exits_0_with_the_db_intact(running, tmp_path, signum):
    db = tmp_path / "p.db"
    name = CATALOG[1]["name"]
    service = running("--port", "0", "--db", str(db), "--latency-ms", "600")
    results: list[tuple[int, dict]] = []
    buyer = threading.Thread(target=lambda: results.append(
        fetch(service.url + "/products/buy", "POST", {"name": name, "quantity": 2})))
    buyer.start()
    time.sleep(0.25)  # the buy is now waiting inside its injected latency
    service.proc.send_signal(signum)
    buyer.join(timeout=15)
    assert service.proc.wait(timeout=15) == 0
    assert "Traceback" not in service.proc.stderr.read()
    assert results and results[0][0] == 200 and results[0][1]["data"]["remainingStock"] == CATALOG[1]["stock"] - 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT stock FROM products WHERE name = ?", (name,)).fetchone()[0] == CATALOG[1]["stock"] - 2


def test_external_writer_is_seen_by_the_product_list(running, tmp_path):
    db = tmp_path / "p.db"
    service = running("--port", "0", "--db", str(db))
    name = CATALOG[2]["name"]
    assert fetch(service.url + "/products")[0] == 200  # fills the cached list
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE products SET stock = 1234 WHERE name = ?", (name,))
    listed = {p["name"]: p["stock"] for p in fetch(service.url + "/products")[1]["data"]}
    assert listed[name] == 1234


# --- faults --------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_latency_delays_each_request_within_bounds_but_not_health(running, tmp_path):
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), "--latency-ms", "200:300")
    delays = [timed(service.url + "/products") for _ in range(6)]
    assert all(0.2 <= d < 1.5 for d in delays), delays
    assert statistics.median(timed(service.url + "/health") for _ in range(5)) < 0.15


@pytest.mark.e2e
def test_latency_does_not_block_other_requests(running, tmp_path):
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), "--latency-ms", "400")
    threads = [threading.Thread(target=fetch, args=(service.url + "/products",)) for _ in range(10)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.perf_counter() - start
    assert 0.4 <= elapsed < 2.0, elapsed  # sequential delays would need 4 s


@pytest.mark.e2e
def test_simulate_delay_environment_adds_latency_and_flag_zero_turns_it_off(running, tmp_path):
    env = service_env(SIMULATE_DELAY_ENABLED="true", SIMULATE_DELAY_MIN_MS="250", SIMULATE_DELAY_MAX_MS="300")
    delayed = running("--port", "0", "--db", str(tmp_path / "a.db"), env=env)
    assert min(timed(delayed.url + "/products") for _ in range(3)) >= 0.25
    plain = running("--port", "0", "--db", str(tmp_path / "b.db"), "--latency-ms", "0", env=env)
    assert statistics.median(timed(plain.url + "/products") for _ in range(5)) < 0.2


def test_simulate_delay_disabled_means_no_latency(running, tmp_path):
    env = service_env(SIMULATE_DELAY_ENABLED="false", SIMULATE_DELAY_MIN_MS="900", SIMULATE_DELAY_MAX_MS="900")
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), env=env)
    assert statistics.median(timed(service.url + "/products") for _ in range(3)) < 0.5


def test_error_rate_one_fails_every_request_but_health(running, tmp_path):
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), "--error-rate", "1.0")
    name = CATALOG[0]["name"]
    for method, path, payload in [("GET", "/products", None), ("GET", "/products/category?category=Books", None),
                                  ("POST", "/products/details", {"name": name}),
                                  ("POST", "/products/buy", {"name": name, "quantity": 1}),
                                  ("PATCH", "/products/stock", {"name": name, "stock": 1}), ("GET", "/nope", None)]:
        assert fetch(service.url + path, method, payload) == (500, {"status": "error", "error": {
            "code": "UNKNOWN_ERROR", "message": "An internal server error occurred."}})
    assert fetch(service.url + "/health") == (200, {"status": "ok"})
    service.stop()
    with sqlite3.connect(tmp_path / "p.db") as conn:  # an injected failure has no effect
        assert conn.execute("SELECT stock FROM products WHERE name = ?", (name,)).fetchone()[0] == CATALOG[0]["stock"]


@pytest.mark.e2e
def test_error_rate_half_fails_about_half_of_the_requests(running, tmp_path):
    service = running("--port", "0", "--db", str(tmp_path / "p.db"), "--error-rate", "0.5")
    statuses = [fetch(service.url + "/products")[0] for _ in range(200)]
    assert set(statuses) == {200, 500}
    assert 60 <= statuses.count(500) <= 140, statuses.count(500)
