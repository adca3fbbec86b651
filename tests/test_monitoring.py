"""monitoring.py against a real time-series server (victoria-metrics) and against failing ones."""
from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import locust  # noqa: F401 - gevent monkey-patching first, exactly as in a real run
import gevent
import pytest
from locust import FastHttpUser, constant_pacing, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadsuite.config import load_config
from loadsuite.monitoring import dashboards
from loadsuite.monitoring import influx as monitoring
from loadsuite.runtime.custom_stats import RunStats
from loadsuite.runtime.attach import attach_listeners
from loadsuite.config import InfluxConfig
from conftest import ROOT, free_port
from metrics_server import VictoriaMetrics, start_fake_metrics_server, start_target

PACING_S = 0.1
USERS = 5
TOKEN = "tok-S3cr3t-do-not-log-0123456789"
OK_NAME = "Get Products, by=Category"  # space, comma and equals sign: line-protocol escaping
FAIL_NAME = "Get_Fail"


class ShopUser(FastHttpUser):
    wait_time = constant_pacing(PACING_S)

    @task(3)
    def browse(self):
        self.client.get("/products", name=OK_NAME)

    @task(1)
    def fail(self):
        self.client.get("/fail", name=FAIL_NAME)


SLOW_NAME = "Get_Slow"
DELAYS_MS = (0, 3, 8, 15, 30, 45, 60, 90, 130, 180, 240)
RUN_STATS = RunStats()


class BuyerUser(FastHttpUser):
    """Spread latencies over many histogram buckets, and buy (custom business stats) as the suite does."""

    wait_time = constant_pacing(PACING_S)

    @task(4)
    def slow(self):
        self.client.get(f"/slow?ms={random.choice(DELAYS_MS)}", name=SLOW_NAME)

    @task(1)
    def fail(self):
        self.client.get("/fail", name=FAIL_NAME)

    @task(1)
    def buy(self):
        RUN_STATS.purchase(2)
        RUN_STATS.business_outcome("insufficient_stock")


def influx_config(url: str, **overrides) -> InfluxConfig:
    values = dict(enabled=True, url=url, flush_interval_seconds=0.5, write_timeout_seconds=0.5,
                  test_name="monitoring test", batch_size=50)
    values.update(overrides)
    return InfluxConfig(**values)


@dataclass
class Run:
    env: Environment
    monitor: monitoring.Monitor | None
    stop_seconds: float

    def requests(self, name: str | None = None) -> int:
        stats = self.env.stats
        return stats.total.num_requests if name is None else stats.entries[(name, "GET")].num_requests


def run_locust(target: str, config: InfluxConfig, seconds: float, *, token: str | None = TOKEN,
               custom_stats=None, meanwhile=None, user_classes=(ShopUser,)) -> Run:
    """Run the user classes in-process for `seconds` with monitoring installed; `meanwhile(t)` runs at t seconds."""
    env = Environment(user_classes=list(user_classes), host=target)
    runner = env.create_local_runner()
    monitor = monitoring.install(env, config, token, "run-test-1", custom_stats)
    if monitor is not None:
        attach_listeners(env.events, monitor.listeners())
    runner.start(USERS, spawn_rate=USERS * 20)
    if meanwhile is not None:
        gevent.spawn_later(meanwhile[0], meanwhile[1])
    gevent.sleep(seconds)
    started = time.monotonic()
    runner.stop()
    stop_seconds = time.monotonic() - started
    env.events.quitting.fire(environment=env, reverse=True)
    runner.quit()
    return Run(env, monitor, stop_seconds)


def assert_users_were_not_slowed(run: Run, seconds: float) -> None:
    expected = USERS * seconds / PACING_S
    assert run.requests() >= 0.85 * expected, f"{run.requests()} requests, expected about {expected:.0f}"


def assert_results_untouched(run: Run) -> None:
    """Monitoring adds no request, no failure and no error of its own to the run's stats."""
    assert set(run.env.stats.entries) == {(OK_NAME, "GET"), (FAIL_NAME, "GET")}
    assert run.env.stats.entries[(OK_NAME, "GET")].num_failures == 0
    assert {error.name for error in run.env.stats.errors.values()} == {FAIL_NAME}


def write_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "monitoring" and r.levelno == logging.WARNING]


@pytest.fixture
def target():
    server = start_target()
    yield server
    server.stop()


@pytest.fixture
def victoria_metrics(tmp_path):
    server = VictoriaMetrics.start(tmp_path / "vm-data")
    yield server
    server.stop()


# ----- fast checks ---------------------------------------------------------------------------

def test_importing_the_module_registers_no_listener():
    code = ("import locust, monitoring\n"
            "from locust import events\n"
            "hooks = [h for e in vars(events).values() for h in getattr(e, '_handlers', [])]\n"
            "print(sum(getattr(h, '__module__', '') == 'monitoring' for h in hooks))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def _listeners(env: Environment) -> int:
    return sum(len(getattr(hook, "_handlers", [])) for hook in vars(env.events).values())


def test_install_does_nothing_when_disabled():
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    env.create_local_runner()
    before = _listeners(env)
    assert monitoring.install(env, InfluxConfig(enabled=False), TOKEN, "r") is None
    assert _listeners(env) == before


class _IdleWorker(WorkerRunner):
    """A worker runner that never connects to a master."""

    def __init__(self):
        self.greenlet = None


def test_worker_opens_nothing_in_aggregate_mode_but_streams_raw():
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    env.runner = _IdleWorker()
    assert monitoring.install(env, influx_config("http://127.0.0.1:1"), TOKEN, "r") is None
    assert _listeners(env) == 0
    raw = monitoring.install(env, influx_config("http://127.0.0.1:1", mode="raw"), TOKEN, "r")
    assert raw is not None and ("request", raw._on_request) in raw.listeners()


def test_interval_points_count_only_the_requests_of_that_interval():
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    monitor = monitoring.Monitor(env, influx_config("http://127.0.0.1:1"), TOKEN, "r")
    for _ in range(10):
        env.stats.log_request("POST", "Buy_Product", 10, 100)
    monitor._sample()
    for _ in range(4):
        env.stats.log_request("POST", "Buy_Product", 500, 100)
    env.stats.log_error("POST", "Buy_Product", "insufficient stock")
    monitor._sample()
    points = [line for line in monitor._buffer if line.startswith("locust_requests,")]
    assert len(points) == 2
    first, second = (dict(kv.split("=") for kv in re.split(r"(?<!\\) ", p)[1].split(",")) for p in points)
    assert (first["count"], first["failures"], first["p50"], first["p99"]) == ("10i", "0i", "10.0", "10.0")
    assert (second["count"], second["failures"]) == ("4i", "1i")
    assert float(second["p50"]) == float(second["avg"]) == 500.0
    assert ",name=Buy_Product,method=POST" in points[1] and ",run_id=r," in points[1]


def test_broken_custom_stats_warn_once_and_the_stream_goes_on(caplog):
    caplog.set_level(logging.INFO)
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")

    def broken() -> dict:
        raise RuntimeError("counter gone")

    monitor = monitoring.Monitor(env, influx_config("http://127.0.0.1:1"), TOKEN, "r", custom_stats=broken)
    env.stats.log_request("GET", "Health_Check", 3, 10)
    monitor._sample()
    monitor._sample()
    assert sum(line.startswith("locust_requests,") for line in monitor._buffer) == 1
    assert sum(line.startswith("locust_run,") for line in monitor._buffer) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "counter gone" in warnings[0]


def test_raw_buffer_is_bounded_and_drops_the_oldest(caplog):
    caplog.set_level(logging.INFO)
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    config = influx_config(f"http://127.0.0.1:{free_port()}", mode="raw", max_buffer_points=100)
    monitor = monitoring.install(env, config, TOKEN, "r")
    attach_listeners(env.events, monitor.listeners())
    for i in range(1000):
        env.events.request.fire(request_type="GET", name=f"n{i}", response_time=1.0, response_length=2,
                                exception=None, context={}, start_time=time.time())
    assert monitor.buffered == 100
    assert [item[2] for item in monitor._buffer][:2] == ["n900", "n901"]  # the newest survive
    monitor.flush(timeout=0.5)  # nothing listens: counted, not raised
    assert monitor.stats() == {"points_written": 0, "points_dropped": 1000, "write_errors": 1}
    assert len(write_warnings(caplog)) == 1


def test_client_leaves_locust_log_levels_alone():
    root = logging.getLogger()
    before = root.level
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    monitoring.Monitor(env, influx_config("http://127.0.0.1:1"), TOKEN, "r")._ensure_client()
    assert root.level == before


# ----- against a real victoria-metrics -------------------------------------------------------

def _by_point(series: list[dict]) -> dict[tuple, dict[str, float]]:
    """Group exported samples back into points: (measurement, tags, timestamp) -> {field: value}."""
    points: dict[tuple, dict[str, float]] = defaultdict(dict)
    for s in series:
        metric = dict(s["metric"])
        name = metric.pop("__name__")
        measurement, field = next((m, name[len(m) + 1:]) for m in
                                  ("locust_requests", "locust_run", "locust_custom", "locust_events", "locust_raw",
                                   "locust_latency", "locust_failures", "locust_responses", "locust_users")
                                  if name.startswith(m + "_"))
        for ts, value in zip(s["timestamps"], s["values"]):
            points[(measurement, tuple(sorted(metric.items())), ts)][field] = value
    return points


def exported_points(server: VictoriaMetrics, expected: int, timeout: float = 10.0) -> dict[tuple, dict[str, float]]:
    """The server's points, once all `expected` ones are readable (it makes fresh rows searchable lazily)."""
    deadline = time.monotonic() + timeout
    while True:
        points = _by_point(server.export())
        if len(points) >= expected or time.monotonic() > deadline:
            return points
        time.sleep(0.2)


@pytest.mark.e2e
def test_a_write_in_flight_when_the_run_ends_is_stored_once(victoria_metrics):
    """The end of a run flushes while the writer may wait for a write's answer: that write is stored once.

    The answers come 0.3 s late (the real server has stored the points by then): a flush that killed the
    writer meanwhile kept those points buffered and sent them again, and the server counted them twice.
    """
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    monitor = monitoring.Monitor(env, influx_config(victoria_metrics.url, write_timeout_seconds=3.0), TOKEN, "once")
    send = monitor._send

    stored = []

    def late_answer(body, timeout):
        error = send(body, timeout)
        stored.append(body.count(b"\n") + 1)
        gevent.sleep(0.3)
        return error

    monitor._send = late_answer
    base = time.time_ns()
    for k in range(120):  # three batches of 50, 50 and 20
        monitor._push(f"locust_once,run_id=once,k={k} value=1i {base + k}")
    monitor._writer = gevent.spawn(monitor._drain, None)
    deadline = time.monotonic() + 5
    while not stored and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert stored == [50]  # the first batch is stored; its answer has not come back yet
    monitor.flush()
    assert monitor.stats() == {"points_written": 120, "points_dropped": 0, "write_errors": 0}
    deadline = time.monotonic() + 10
    while True:
        total = victoria_metrics.query("/api/v1/query", time=f"{time.time():.3f}",
                                       query='sum(count_over_time(locust_once_value{run_id="once"}[10m]))')
        if (total and int(float(total[0]["value"][1])) >= 120) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert int(float(total[0]["value"][1])) == 120  # each point once


@pytest.mark.e2e
def test_aggregate_points_match_the_runs_own_stats(target, victoria_metrics, caplog):
    caplog.set_level(logging.INFO)
    seconds = 3.0
    run = run_locust(target.url, influx_config(victoria_metrics.url), seconds,
                     custom_stats=lambda: {"buys": {"ok": 7, "failed": 1}, "note": "text is skipped"})
    assert_results_untouched(run)
    points = exported_points(victoria_metrics, run.monitor.stats()["points_written"])
    requests = {k: v for k, v in points.items() if k[0] == "locust_requests"}
    for name in (OK_NAME, FAIL_NAME):
        mine = [fields for (_, tags, _), fields in requests.items() if dict(tags)["name"] == name]
        entry = run.env.stats.entries[(name, "GET")]
        assert entry.num_requests > 0
        assert sum(f["count"] for f in mine) == entry.num_requests
        assert sum(f["failures"] for f in mine) == entry.num_failures
        for f in mine:  # percentiles are Locust's rounded response-time buckets
            assert min(entry.response_times) <= f["p50"] <= f["p95"] <= f["p99"] <= max(entry.response_times)
            assert entry.min_response_time <= f["avg"] <= entry.max_response_time
            assert f["rps"] > 0
    assert sum(f["failures"] for (_, tags, _), f in requests.items() if dict(tags)["name"] == FAIL_NAME) \
        == run.requests(FAIL_NAME)  # every /fail is a failure
    tags = dict(next(iter(requests))[1])
    assert {k: tags[k] for k in ("run_id", "host", "test_name", "method")} == {
        "run_id": "run-test-1", "host": target.url, "test_name": "monitoring test", "method": "GET"}
    run_points = [f for k, f in points.items() if k[0] == "locust_run"]
    assert sum(f["count"] for f in run_points) == run.requests()
    assert max(f["users"] for f in run_points) == USERS
    assert all(0.0 <= f["failure_ratio"] <= 1.0 for f in run_points)
    custom = [f for k, f in points.items() if k[0] == "locust_custom"]
    assert custom and all(f == {"buys_ok": 7, "buys_failed": 1} for f in custom)
    events = sorted(dict(k[1])["event"] for k in points if k[0] == "locust_events")
    assert events == ["end", "start"]
    assert run.monitor.stats() == {"points_written": len(points), "points_dropped": 0, "write_errors": 0}
    assert not write_warnings(caplog)
    assert any("points written" in r.getMessage() for r in caplog.records)


@pytest.mark.e2e
def test_raw_mode_writes_one_point_per_request(target, victoria_metrics):
    run = run_locust(target.url, influx_config(victoria_metrics.url, mode="raw"), 2.0)
    # Raw points of one series can share a millisecond, the server's precision: count samples, not
    # (series, timestamp) pairs.
    deadline = time.monotonic() + 10
    while True:
        failed = [v for s in victoria_metrics.export('{__name__="locust_raw_failed"}') for v in s["values"]]
        if len(failed) >= run.requests() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(failed) == run.requests()
    assert sum(failed) == run.env.stats.total.num_failures == run.requests(FAIL_NAME)
    assert run.monitor.stats()["points_dropped"] == 0


# ----- a metrics server that fails must not touch the load test -------------------------------

@pytest.mark.e2e
def test_metrics_server_down_from_the_start(target, caplog):
    caplog.set_level(logging.INFO)
    seconds, cap = 3.0, 20
    config = influx_config(f"http://127.0.0.1:{free_port()}", max_buffer_points=cap, flush_interval_seconds=0.25)
    run = run_locust(target.url, config, seconds)
    assert_users_were_not_slowed(run, seconds)
    assert_results_untouched(run)
    assert run.stop_seconds < config.write_timeout_seconds + 1.5
    stats = run.monitor.stats()
    assert stats["points_written"] == 0 and stats["points_dropped"] > cap and stats["write_errors"] >= 2
    assert run.monitor.max_buffered <= cap and run.monitor.buffered == 0
    assert len(write_warnings(caplog)) == 1


@pytest.mark.e2e
def test_metrics_server_killed_mid_run(target, victoria_metrics, caplog):
    caplog.set_level(logging.INFO)
    seconds, cap = 4.0, 10
    config = influx_config(victoria_metrics.url, max_buffer_points=cap, flush_interval_seconds=0.25)
    run = run_locust(target.url, config, seconds, meanwhile=(1.5, victoria_metrics.kill))
    assert_users_were_not_slowed(run, seconds)
    assert_results_untouched(run)
    assert run.stop_seconds < config.write_timeout_seconds + 1.5
    stats = run.monitor.stats()
    assert stats["points_written"] > 0 and stats["points_dropped"] > 0 and stats["write_errors"] >= 1
    assert run.monitor.max_buffered <= cap
    assert len(write_warnings(caplog)) == 1


@pytest.mark.e2e
def test_slow_metrics_server_never_blocks_users(target, caplog):
    caplog.set_level(logging.INFO)
    slow = start_fake_metrics_server("slow", delay=3.0)
    try:
        seconds, cap = 3.0, 200  # above one sample (histograms included), so the first failure is the slow write
        config = influx_config(slow.url, max_buffer_points=cap, flush_interval_seconds=0.25,
                               write_timeout_seconds=0.5)
        run = run_locust(target.url, config, seconds)
    finally:
        slow.stop()
    assert_users_were_not_slowed(run, seconds)
    assert_results_untouched(run)
    assert run.stop_seconds < config.write_timeout_seconds + 1.5
    stats = run.monitor.stats()
    assert stats["points_written"] == 0 and stats["points_dropped"] > 0 and stats["write_errors"] >= 2
    assert run.monitor.max_buffered <= cap
    warnings = write_warnings(caplog)
    assert len(warnings) == 1 and "no answer within" in warnings[0]


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["endless200", "endless500"])
def test_a_metrics_server_whose_answer_never_ends_never_blocks_users(target, caplog, mode):
    """Its answer announces 4 GiB and keeps coming: the writer reads at most a few KiB of it (a socket that always
    has data never yields to gevent, so neither the write timeout nor the users would run while it read)."""
    import psutil

    caplog.set_level(logging.INFO)
    endless = start_fake_metrics_server(mode, delay=0.0)
    rss_before = psutil.Process().memory_info().rss
    try:
        seconds = 3.0
        config = influx_config(endless.url, flush_interval_seconds=0.25, write_timeout_seconds=1.0)
        run = run_locust(target.url, config, seconds)
    finally:
        endless.stop()
    assert_users_were_not_slowed(run, seconds)
    assert_results_untouched(run)
    assert run.stop_seconds < config.write_timeout_seconds + 1.5
    assert psutil.Process().memory_info().rss - rss_before < 256 * 2**20
    stats = run.monitor.stats()
    if mode == "endless200":  # accepted: a 2xx is a write, whatever follows it
        assert stats["points_written"] > 0 and stats["write_errors"] == 0, stats
    else:
        assert stats["points_written"] == 0 and stats["write_errors"] >= 2, stats
        warnings = write_warnings(caplog)
        assert len(warnings) == 1 and "HTTP 500" in warnings[0] and "xxxx" in warnings[0], warnings


@pytest.mark.e2e
def test_token_is_never_logged_even_when_the_server_echoes_it(target, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    echo = start_fake_metrics_server("echo401", delay=0.0)
    try:
        run = run_locust(target.url, influx_config(echo.url), 1.5)
    finally:
        echo.stop()
    out, err = capfd.readouterr()
    warnings = write_warnings(caplog)
    assert len(warnings) == 1 and "401" in warnings[0] and "***" in warnings[0]  # seen, and masked
    assert run.monitor.stats()["write_errors"] >= 1
    for text in (caplog.text, out, err, *(str(r.args) for r in caplog.records)):
        assert TOKEN not in text


# ----- histogram and dashboards ----------------------------------------------------------------

def _parse_line(line: str) -> tuple[str, dict[str, str], set[str]]:
    """(measurement, tags, field names) of one line-protocol line."""
    head, rest = re.split(r"(?<!\\) ", line, maxsplit=1)
    field_part = rest.rsplit(" ", 1)[0]
    measurement, *tags = re.split(r"(?<!\\),", head)
    fields = set(re.findall(r'(?:^|,)([^=,"]+)=(?:"(?:[^"\\]|\\.)*"|[^,]*)', field_part))
    return measurement, dict(re.split(r"(?<!\\)=", tag, maxsplit=1) for tag in tags), fields


def test_histogram_buckets_are_cumulative_counts_of_the_interval():
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    monitor = monitoring.Monitor(env, influx_config("http://127.0.0.1:1"), TOKEN, "r")
    for ms in (3, 10, 10, 99, 240, 1000, 1800, 70000):
        env.stats.log_request("GET", "Get_Slow", ms, 1)
    monitor._sample()
    for ms in (4, 4):
        env.stats.log_request("GET", "Get_Slow", ms, 1)
    monitor._sample()
    buckets = [_parse_line(line) + (line,) for line in monitor._buffer if line.startswith("locust_latency,")]
    per_sample = len(monitoring.LATENCY_BUCKETS_MS) + 1
    assert len(buckets) == 2 * per_sample
    first = {tags["le"]: int(line.split(" bucket=")[1].split("i")[0]) for _, tags, _, line in buckets[:per_sample]}
    assert (first["5"], first["10"], first["100"], first["300"], first["1000"], first["2000"], first["60000"],
            first["+Inf"]) == (1, 3, 4, 5, 6, 7, 7, 8)
    second = {tags["le"]: int(line.split(" bucket=")[1].split("i")[0]) for _, tags, _, line in buckets[per_sample:]}
    assert second["5"] == second["+Inf"] == 2  # only this interval's requests


def test_dashboard_files_are_the_ones_built_from_the_panel_list():
    thresholds = load_config(ROOT / "config.yaml", env={}).thresholds
    for name, text in dashboards.render(thresholds.p95_ms, thresholds.p99_ms).items():
        on_disk = dashboards.OUT / name
        assert on_disk.read_text() == text, f"{name} is stale: run python -m loadsuite.monitoring.dashboards"
    steps = json.loads((dashboards.OUT / dashboards.FLUX_FILE).read_text())["panels"][2]["fieldConfig"][
        "defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps[1:]] == [thresholds.p95_ms, thresholds.p99_ms]


def _written_series() -> tuple[dict[str, set[str]], set[str]]:
    """Measurement -> field names, and every tag key, of the points one aggregate run writes."""
    env = Environment(user_classes=[ShopUser, BuyerUser], host="http://127.0.0.1:1")
    env.create_local_runner()
    config = influx_config("http://127.0.0.1:1", status_codes=True)
    stats = RunStats()
    stats.purchase(1)
    stats.business_outcome("insufficient_stock")
    monitor = monitoring.Monitor(env, config, TOKEN, "r", custom_stats=stats.snapshot)
    monitor._on_test_start()
    monitor._sampler.kill()
    env.stats.log_request("GET", "Get_Slow", 12, 1)
    env.stats.log_error("GET", "Get_Slow", "CatchResponseError('status: expected 200, saw 500')")
    monitor._on_response_status("GET", "Get_Slow", response=None)
    monitor._sample()
    monitor._event("end", "ended")
    fields: dict[str, set[str]] = defaultdict(set)
    tags: set[str] = set()
    for line in monitor._buffer:
        measurement, line_tags, line_fields = _parse_line(line)
        fields[measurement] |= line_fields
        tags |= set(line_tags)
    monitor._writer.kill()
    return fields, tags


def test_flux_dashboard_names_only_measurements_fields_and_tags_the_suite_writes():
    fields, tags = _written_series()
    assert {"locust_latency", "locust_failures", "locust_users", "locust_responses", "locust_events"} <= set(fields)
    board = json.loads((dashboards.OUT / dashboards.FLUX_FILE).read_text())
    queries = [t["query"] for p in board["panels"] for t in p["targets"]]
    queries += [a["target"]["query"] for a in board["annotations"]["list"]]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    checked = 0
    for query in queries:
        measurements = re.findall(r'r\._measurement == "(\w+)"', query)
        assert measurements and set(measurements) <= set(fields), query
        for field in re.findall(r'r\._field == "(\w+)"', query):
            assert any(field in fields[m] for m in measurements), (field, query)
            checked += 1
        used_tags = set(re.findall(r"\br\.(\w+)\b", query)) - {"_measurement", "_field", "_value", "le"}
        used_tags |= {c for cols in re.findall(r"columns: \[([^\]]*)\]", query)
                      for c in re.findall(r'"(\w+)"', cols)} - {"_time", "_value", "_field", "_stop", "text", "title"}
        used_tags |= set(re.findall(r'tag: "(\w+)"', query))
        assert used_tags <= tags | {"le"}, (used_tags - tags, query)
    assert "le" in tags and "message" in tags and "reason" in tags and "user_class" in tags
    assert checked >= len(board["panels"])


def _promql(expr: str, range_s: int) -> str:
    return (expr.replace("$run_id", "run-test-1").replace("$__interval_ms", "15000")
            .replace("$__interval", "15s").replace("$__range", f"{range_s}s"))


def _has_data(result: list[dict]) -> bool:
    values = [v for series in result for v in ([series["value"]] if "value" in series else series["values"])]
    return any(v[1] not in ("NaN", "+Inf", "-Inf") for v in values)


def _bucket_of(ms: float) -> tuple[float, float]:
    bounds = (0,) + monitoring.LATENCY_BUCKETS_MS
    for low, high in zip(bounds, bounds[1:]):
        if ms <= high:
            return low, high
    return bounds[-1], float("inf")


@pytest.mark.e2e
def test_every_prometheus_panel_query_returns_data_and_p95_agrees_with_locust(target, victoria_metrics):
    RUN_STATS.reset()
    seconds = 6.0
    started = time.time()
    run = run_locust(target.url, influx_config(victoria_metrics.url, flush_interval_seconds=1.0, status_codes=True),
                     seconds, custom_stats=RUN_STATS.snapshot, user_classes=(BuyerUser, ShopUser))
    end = time.time() + 1
    assert run.monitor.stats()["points_dropped"] == 0
    exported_points(victoria_metrics, run.monitor.stats()["points_written"])  # wait until all are readable
    range_s = int(end - started) + 2
    board = json.loads((dashboards.OUT / dashboards.PROMETHEUS_FILE).read_text())
    checked = 0
    for panel in board["panels"]:
        for target_ in panel["targets"]:
            expr = _promql(target_["expr"], range_s)
            if target_["instant"]:
                result = victoria_metrics.query("/api/v1/query", query=expr, time=f"{end:.3f}")
            else:
                result = victoria_metrics.query("/api/v1/query_range", query=expr, start=f"{started:.3f}",
                                                end=f"{end:.3f}", step="5s")
            assert _has_data(result), f"panel {panel['title']!r}: {expr} returned no data: {result}"
            checked += 1
    assert checked == sum(len(p["targets"]) for p in board["panels"])
    annotation = board["annotations"]["list"][0]
    deadline = time.monotonic() + 10  # the newest sample can take a moment to reach range queries
    while True:
        markers = victoria_metrics.query("/api/v1/query_range", query=_promql(annotation["expr"], range_s),
                                         start=f"{started - 1:.3f}", end=f"{time.time() + 2:.3f}", step="1s")
        messages = {series["metric"]["event"]: series["metric"]["message"] for series in markers}
        if len(messages) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert messages == {"start": "Load test run-test-1 started (monitoring test)",
                        "end": "Load test run-test-1 ended (monitoring test)"}
    run_ids = victoria_metrics.query("/api/v1/label/run_id/values", **{"match[]": "locust_run_users"})
    assert run_ids == ["run-test-1"]
    whole_run = next(p for p in board["panels"] if p["type"] == "stat")["targets"][0]["expr"]
    streamed = float(victoria_metrics.query("/api/v1/query", query=_promql(whole_run, range_s),
                                            time=f"{end:.3f}")[0]["value"][1])
    statuses = victoria_metrics.query("/api/v1/query", time=f"{end:.3f}", query=_promql(
        'sum by (status) (sum_over_time(locust_responses_count{run_id=~"$run_id"}[$__range]))', range_s))
    assert {s["metric"]["status"]: int(s["value"][1]) for s in statuses} == {
        "200": run.requests() - run.requests(FAIL_NAME), "500": run.requests(FAIL_NAME)}
    locust_p95 = run.env.stats.total.get_response_time_percentile(0.95)
    low, high = _bucket_of(locust_p95)
    assert low <= streamed <= high, (streamed, locust_p95)
    assert run.env.stats.total.max_response_time > 2 * locust_p95 / 3  # latencies really spread over buckets


def test_users_per_class_on_a_master_are_the_workers_reports():
    from locust.runners import STATE_RUNNING, WorkerNode

    env = Environment(user_classes=[ShopUser, BuyerUser], host="http://127.0.0.1:1")
    runner = env.create_master_runner("127.0.0.1", free_port())
    try:
        for worker_id, counts in (("w1", {"ShopUser": 3, "BuyerUser": 1}), ("w2", {"ShopUser": 2, "BuyerUser": 4})):
            node = WorkerNode(worker_id, state=STATE_RUNNING)
            node.user_classes_count = counts
            runner.clients[worker_id] = node
        monitor = monitoring.Monitor(env, influx_config("http://127.0.0.1:1"), TOKEN, "r")
        monitor._sample()
        users = {_parse_line(line)[1]["user_class"]: line.split(" users=")[1].split("i")[0]
                 for line in monitor._buffer if line.startswith("locust_users,")}
        assert users == {"ShopUser": "5", "BuyerUser": "5"}
    finally:
        runner.clients.clear()
        runner.quit()


def test_installing_the_monitor_imports_neither_influxdb_client_nor_numpy_and_starts_no_thread():
    # influxdb-client (and NumPy, which it imports when installed) cost the generator about 4 % of its
    # requests per CPU-second for the whole run (bench/bench_monitoring.py): the writer uses urllib3.
    code = ("import locust, os, sys\n"
            "from locust.env import Environment\n"
            "import monitoring\n"
            "from loadsuite.config import InfluxConfig\n"
            "env = Environment(user_classes=[], host='http://127.0.0.1:1')\n"
            "env.create_local_runner()\n"
            "monitor = monitoring.install(env, InfluxConfig(enabled=True, url='http://127.0.0.1:1'), 't', 'r')\n"
            "assert monitor is not None and monitor._http is not None\n"
            "print('numpy' in sys.modules, 'influxdb_client' in sys.modules, len(os.listdir('/proc/self/task')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "1"]


def test_failure_reasons_are_short_and_their_number_is_bounded():
    env = Environment(user_classes=[ShopUser], host="http://127.0.0.1:1")
    monitor = monitoring.Monitor(env, influx_config("http://127.0.0.1:1"), TOKEN, "r")
    env.stats.log_error("GET", "Get_Fail", "CatchResponseError('status: expected 200, saw 500')")
    for i in range(monitoring.MAX_REASONS + 50):
        env.stats.log_error("GET", "Get_Product_Details", f"ConnectionResetError(104, 'reset {i}' {'x' * 300})")
    monitor._sample()
    reasons = [re.sub(r"\\(.)", r"\1", _parse_line(line)[1]["reason"])  # tag values, unescaped
               for line in monitor._buffer if line.startswith("locust_failures,")]
    assert len(reasons) == monitoring.MAX_REASONS + 51
    assert "status: expected 200, saw 500" in reasons
    assert len(set(reasons)) == monitoring.MAX_REASONS + 1 and reasons.count("(other)") == 51
    assert max(len(reason) for reason in reasons) <= monitoring.MAX_REASON_LENGTH
    assert len(monitor._reasons) == monitoring.MAX_REASONS


@pytest.mark.e2e
def test_the_suite_with_the_compose_monitoring_config_streams_what_the_dashboards_read(tmp_path, victoria_metrics):
    """./run_tests.sh with grafana/config.monitoring.yaml (its URL pointed here): the real locustfile's series."""
    import yaml
    from loadsuite.catalogue import read as read_catalogue
    USER_TYPES = read_catalogue().weighted_user_types
    from suite_runs import run_suite, write_config

    data = yaml.safe_load((ROOT / "grafana" / "config.monitoring.yaml").read_text())
    data["monitoring"]["influxdb"].update(url=victoria_metrics.url, flush_interval_seconds=1.0)
    data["wait_time"] = {"min_seconds": 0.05, "max_seconds": 0.2}
    config = write_config(tmp_path / "cfg", data)
    run = run_suite("headless", "6", "5", "--config", str(config), results_root=tmp_path / "results", timeout=120)
    summary = run.summary()
    assert run.returncode in (0, 1), run.explain()  # the verdict is not this test's concern; the stream is
    assert summary["monitoring"]["points_dropped"] == 0 and summary["monitoring"]["write_errors"] == 0
    run_id = summary["run_id"]
    exported_points(victoria_metrics, summary["monitoring"]["points_written"])
    selector = f'run_id="{run_id}"'
    total = victoria_metrics.query("/api/v1/query", time=f"{time.time():.3f}", query=(
        f'sum(sum_over_time(locust_latency_bucket{{{selector}, le="+Inf"}}[10m]))'))
    assert int(float(total[0]["value"][1])) == summary["totals"]["requests"]
    classes = victoria_metrics.query("/api/v1/label/user_class/values", **{"match[]": f"locust_users_users{{{selector}}}"})
    assert classes and set(classes) <= set(USER_TYPES)
    names = victoria_metrics.query("/api/v1/label/name/values", **{"match[]": f"locust_latency_bucket{{{selector}}}"})
    assert set(names) == {name for name, row in run.stats().items() if name != "Aggregated" and row["Request Count"]}
    assert victoria_metrics.query("/api/v1/query", time=f"{time.time():.3f}",
                                  query=f"max_over_time(locust_custom_purchases{{{selector}}}[10m])")
    events = victoria_metrics.export(f'{{__name__="locust_events_value", {selector}}}')
    assert sorted(s["metric"]["event"] for s in events) == ["end", "start"]
    assert all(run_id in s["metric"]["message"] for s in events)
