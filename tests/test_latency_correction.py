"""Coordinated-omission correction: latency from the intended start of each paced task run (latency_correction.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from locust.env import Environment
from locust.stats import calculate_response_time_percentile

from loadsuite.openmodel import latency_correction
from loadsuite.openmodel.latency_correction import OTHER, CorrectedLatency
from loadsuite.openmodel.pacing import OpenModel

from conftest import ROOT


class FakeUser:
    """What pacing and the recorder touch on a Locust user: plain attributes."""


def _percentile(values: list[float], q: float) -> int:
    histogram: dict[int, int] = {}
    for value in values:
        histogram[round(value)] = histogram.get(round(value), 0) + 1
    return calculate_response_time_percentile(histogram, len(values), q)


def test_requests_on_schedule_keep_their_measured_latency():
    recorder, user = CorrectedLatency(), FakeUser()
    for i in range(10):
        user._intended_start = 100.0 + i
        recorder.record(user, "Health_Check", 100.0 + i + 0.0001, 12.0)
    row = recorder.summary()["Health_Check"]
    assert row == {"p50_ms": 12, "p95_ms": 12, "p99_ms": 12, "count": 10}


def test_runs_due_during_a_slow_response_are_measured_from_their_intended_start():
    recorder, user = CorrectedLatency(), FakeUser()
    user._intended_start = 50.0
    recorder.record(user, "Get_All_Products", 50.0, 500.0)  # the service took 500 ms
    user._intended_start = 50.1  # due 100 ms after the first: the replayed sender starts it at 50.5
    recorder.record(user, "Get_All_Products", 50.6, 10.0)
    recorder.record(user, "Get_Product_Details", 50.62, 8.0)  # same run: the same 400 ms lateness
    user._intended_start = 50.2  # the replayed run above ended at 50.528: this one is 328 ms late
    recorder.record(user, "Get_Product_Details", 50.7, 8.0)
    user._intended_start = 50.7  # caught up: measured as Locust measures
    recorder.record(user, "Get_Product_Details", 50.8, 8.0)
    assert recorder._histograms["Get_All_Products"] == {500: 1, 410: 1}
    assert recorder._histograms["Get_Product_Details"] == {410: 1, 340: 1, 8: 1}
    assert recorder.summary()["Aggregated"]["count"] == 5


def test_a_user_that_pacing_left_behind_is_not_blamed_for_an_old_stall():
    recorder, user = CorrectedLatency(), FakeUser()
    for i in range(100):  # constant pacing keeps the user 2 s behind its schedule; the service is fast
        user._intended_start = 10.0 + i * 0.1
        recorder.record(user, "Health_Check", 12.0 + i * 0.1, 5.0)
    assert recorder._histograms["Health_Check"] == {5: 100}


def test_a_user_without_a_schedule_is_measured_as_locust_measures():
    recorder = CorrectedLatency()
    recorder.record(FakeUser(), "Buy_Product", 10.0, 33.0)
    recorder.record(None, "Buy_Product", None, 35.0)
    recorder.record(None, "Buy_Product", None, None)  # Locust's "no response time": not a sample
    assert recorder._histograms["Buy_Product"] == {33: 1, 35: 1}
    assert recorder.summary()["Buy_Product"]["count"] == 2


def test_a_one_second_stall_shows_in_the_corrected_p99_but_not_in_the_plain_one():
    """A user paced by pacing.OpenModel at 100 task runs/s; the service stalls for 1 s in the middle."""
    now = [1000.0]
    model = OpenModel(100.0, clock=lambda: now[0], wall_clock=lambda: now[0])
    user, recorder, plain = FakeUser(), CorrectedLatency(), []
    user._cp_last_run = now[0]
    stall_start, stall_end = 1005.0, 1006.0
    for _ in range(2000):  # 20 s at 100 runs/s: the stall is 1 request in 2000 for Locust
        start = now[0]
        finish = stall_end if stall_start <= start < stall_end else start + 0.002
        recorder.record(user, "Health_Check", start, (finish - start) * 1000)
        plain.append((finish - start) * 1000)
        now[0] = finish
        now[0] += model.pace(user, 100.0, fallback=lambda u: 0.0)
    corrected = recorder.summary()["Health_Check"]
    assert corrected["count"] == len(plain)
    assert _percentile(plain, 0.99) <= 5 and max(plain) >= 900  # Locust saw the stall once, its p99 hides it
    assert corrected["p99_ms"] >= 500  # ~100 task runs were due during the stall: the corrected p99 shows it
    assert corrected["p50_ms"] <= 5  # and the replayed sender catches up afterwards


def test_worker_histograms_merge_on_the_master():
    master, worker_a, worker_b = CorrectedLatency(), CorrectedLatency(), CorrectedLatency()
    for value in (10.0, 20.0, 30.0):
        worker_a.record(None, "Health_Check", None, value)
    worker_b.record(None, "Health_Check", None, 1500.0)
    worker_b.record(None, "Buy_Product", None, 5.0)
    payload = json.loads(json.dumps(worker_a.drain()))  # survives serialisation (msgpack is as strict)
    master.merge(payload)
    master.merge(worker_b.drain())
    assert worker_a.summary() == {}  # drained
    summary = master.summary()
    assert summary["Health_Check"]["count"] == 4 and summary["Health_Check"]["p99_ms"] == 1500
    assert summary["Aggregated"]["count"] == 5


def test_malformed_worker_reports_are_ignored():
    master = CorrectedLatency()
    for payload in (None, "x", {"A": "x"}, {"A": [[1]]}, {"A": [["1", 2]]}, {"A": [[1, -3]]}):
        master.merge(payload)
    assert master.summary().get("A", {"count": 0})["count"] == 0


def test_memory_is_bounded_by_names_and_buckets():
    recorder = CorrectedLatency(max_names=5)
    for i in range(50):
        for value in range(0, 60000, 7):
            recorder.record(None, f"name-{i}", None, float(value))
    assert len(recorder._histograms) == 5 and OTHER in recorder._histograms
    assert max(len(h) for h in recorder._histograms.values()) < 400  # Locust's rounding: ~2 significant digits


def test_nothing_is_installed_without_an_open_model():
    environment = Environment()
    assert latency_correction.install(environment) == []
    assert latency_correction.summary(environment) is None
    assert not environment.events.request._handlers or all(
        getattr(h, "__self__", None).__class__ is not CorrectedLatency for h in environment.events.request._handlers)


@pytest.mark.e2e
def test_suite_reports_a_service_stall_in_corrected_latency(tmp_path, service_factory):
    """The suite paced at 100 requests/s against the reference service, frozen (SIGSTOP) for one second."""
    service = service_factory()
    config = tmp_path / "config.yaml"
    config.write_text("load_shape: {target_rps: 100}\n"
                      "thresholds: {error_rate: null, p95_ms: null, p99_ms: null, consistency: false}\n"
                      "oracle: {enabled: false}\n")
    env = {**os.environ, "CONFIG_PATH": str(config), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "2", "-r", "2", "-t", "9s",
           "--host", service.url, "--tags", "health", "--csv", str(tmp_path / "stats"),
           "--results-dir", str(tmp_path), "--only-summary"]
    locust = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4.5)  # startup and a few seconds of paced traffic
        os.kill(service.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
        finally:
            os.kill(service.proc.pid, signal.SIGCONT)
        output, _ = locust.communicate(timeout=60)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait(timeout=10)
    summary = json.loads((tmp_path / "summary.json").read_text())
    plain = next(row for row in summary["endpoints"] if row["name"] == "Health_Check")
    corrected = summary["corrected_latency"]["Health_Check"]
    assert corrected["count"] == plain["requests"] > 300, output[-1500:]
    assert plain["max_ms"] >= 800, "the stall did not happen during the run"
    assert corrected["p99_ms"] >= 500 and plain["p99_ms"] < corrected["p99_ms"] / 2, (plain, corrected)
    assert "Latency from the intended start" in output


@pytest.mark.e2e
def test_closed_model_runs_report_no_corrected_latency(tmp_path, product_service):
    config = tmp_path / "config.yaml"
    config.write_text("wait_time: {min_seconds: 0.05, max_seconds: 0.1}\noracle: {enabled: false}\n")
    env = {**os.environ, "CONFIG_PATH": str(config), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "2", "-r", "2", "-t", "2s",
           "--host", product_service.url, "--tags", "health", "--results-dir", str(tmp_path), "--only-summary"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["corrected_latency"] is None, done.stdout[-1000:]
    assert summary["totals"]["requests"] > 0
