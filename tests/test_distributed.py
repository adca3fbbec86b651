"""Distributed mode: ./run_tests.sh distributed runs a master and two workers on loopback, both workers
send traffic, the master aggregates what a single process reports, and nothing is left running."""
from __future__ import annotations

import csv
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest

from suite_runs import RESULT_FILES, SUMMARY_KEYS, assert_summary_schema, run_suite, write_config

pytestmark = pytest.mark.e2e

QUICK = {"wait_time": {"min_seconds": 0.02, "max_seconds": 0.1}}


def port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two distributed runs side by side (each a master, two workers and its own bundled service): {"plain":
    ./run_tests.sh distributed 2 6 8 with the full default user mix, "staged": a staged shape of 7 s that must
    end a run whose DURATION_S is 120}."""
    plain, staged = tmp_path_factory.mktemp("distributed"), tmp_path_factory.mktemp("staged")
    plain_config = write_config(plain, QUICK)
    staged_config = write_config(staged, {**QUICK, "load_shape": {"staged": {"stages": [
        {"duration": 3, "users": 2, "spawn_rate": 2},
        {"duration": 3, "users": 4, "spawn_rate": 4},
        {"duration": 1, "users": 0, "spawn_rate": 4},
    ]}}})
    with ThreadPoolExecutor(2) as pool:
        futures = {
            "plain": pool.submit(run_suite, "distributed", "2", "6", "8", "--config", str(plain_config),
                                 "--spawn-rate", "6", "--no-analysis", results_root=plain / "results", timeout=120),
            "staged": pool.submit(run_suite, "distributed", "2", "1", "120", "--shape", "staged", "--config",
                                  str(staged_config), "--no-analysis", results_root=staged / "results", timeout=90)}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def distributed_run(runs):
    return runs["plain"]


def test_distributed_run_passes_with_two_workers(distributed_run):
    run = distributed_run
    assert run.returncode == 0, run.explain()
    summary = run.summary()
    assert summary["workers"] == {"count": 2, "lost": []}
    assert summary["users"]["peak"] == 6
    assert summary["verdict"]["exit_code"] == 0
    assert len(run.role("worker")) == 2 and len(run.role("master")) == 1, [c.cmdline for c in run.children.values()]


def test_both_workers_sent_traffic_to_the_service(distributed_run):
    run = distributed_run
    service_port = urlparse(run.summary()["host"]).port
    talked = {worker.pid: service_port in worker.peers for worker in run.role("worker")}
    assert len(talked) == 2 and all(talked.values()), f"workers connected to the service: {talked}"
    master = run.role("master")[0]
    for n in (1, 2):
        log = (run.folder / f"worker-{n}.log").read_text(encoding="utf-8")
        assert "Traceback" not in log, log[-2000:]
    assert master.pid not in {w.pid for w in run.role("worker")}


def test_custom_stats_are_the_sum_of_the_workers(distributed_run):
    """Each worker counts its own purchases; the master's totals must match Locust's merged request stats."""
    summary = distributed_run.summary()
    custom = summary["custom_stats"]
    endpoints = {row["name"]: row for row in summary["endpoints"]}
    buys = endpoints["Buy_Product"]
    assert custom["purchases"] > 0
    assert custom["purchases"] + custom["insufficient_stock"] == buys["requests"] - buys["failures"]
    updates = endpoints.get("Update_Product_Stock", {"requests": 0, "failures": 0})
    assert custom["stock_updates"] == updates["requests"] - updates["failures"]
    with open(distributed_run.folder / "custom_report.csv", newline="", encoding="utf-8") as f:
        rows = {(r["metric"], r["key"]): int(r["value"]) for r in csv.DictReader(f)}
    assert rows[("purchases", "")] == custom["purchases"] and rows[("units_sold", "")] == custom["units_sold"]


def test_master_reports_everything_a_single_process_reports(distributed_run):
    run = distributed_run
    for name in RESULT_FILES:
        assert (run.folder / name).is_file(), name
    summary = run.summary()
    assert_summary_schema(summary)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["totals"]["requests"] == sum(row["requests"] for row in summary["endpoints"]) > 0
    assert summary["totals"]["failures"] == 0, run.failures()
    consistency = summary["consistency"]
    assert consistency["passed"] is True and not consistency["notes"], consistency  # both workers' records arrived
    assert summary["thresholds"] and all(t["passed"] for t in summary["thresholds"])


def test_no_process_outlives_the_distributed_run(distributed_run):
    run = distributed_run
    assert not run.survivors, f"left running: {run.survivors}"
    roles = sorted(child.role for child in run.children.values() if child.role != "other")
    assert roles == ["master", "service", "worker", "worker"], roles
    assert port_is_closed(urlparse(run.summary()["host"]).port)


def test_distributed_staged_shape_stops_by_itself(runs):
    run = runs["staged"]  # DURATION_S is 120: only the shape can end this run in time
    assert run.returncode == 0, run.explain()
    assert run.seconds < 60, f"the run took {run.seconds:.0f}s: the shape did not stop it"
    summary = run.summary()
    assert summary["shape"] == "staged" and summary["workers"]["count"] == 2
    assert summary["users"]["peak"] == 4 and summary["interrupted"] is False
    with open(run.folder / "stats_stats_history.csv", newline="", encoding="utf-8") as f:
        counts = [int(r["User Count"]) for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    assert 2 in counts and 4 in counts and counts.index(2) < counts.index(4), counts
    assert not run.survivors, run.survivors
