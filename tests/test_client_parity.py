"""The suite behaves the same with either Locust client (service.client: fast | requests)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

CLIENTS = ("fast", "requests")
# Task names whose request is drawn at random from a family (edge cases, invalid payloads): a short run
# may not send every member with both clients, so those families are compared by prefix only.
SAMPLED_FAMILIES = ("Edge_Case_", "Invalid_Buy_Payload_", "Invalid_Stock_Payload_")
HAPPY = ("Get_All_Products", "Get_Product_Details", "Buy_Product", "Update_Product_Stock", "Health_Check",
         "Invalid_Path")
NEGATIVE = ("Details_Unknown_Product", "Buy_Unknown_Product", "Buy_Beyond_Stock", "Missing_Category")


def run_suite(tmp_path: Path, client: str, url: str, seconds: int = 5, users: int = 10) -> dict:
    """One headless run of the suite; its summary.json, stats rows and failure rows."""
    folder = tmp_path / client
    folder.mkdir()
    config = folder / "config.yaml"
    config.write_text("wait_time: {min_seconds: 0.005, max_seconds: 0.02}\n"
                      "thresholds: {error_rate: null, p95_ms: null, p99_ms: null, consistency: true}\n")
    env = {**os.environ, "CONFIG_PATH": str(config), "SERVICE_CLIENT": client, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", str(users), "-r", str(users),
           "-t", f"{seconds}s", "--host", url, "--csv", str(folder / "stats"), "--results-dir", str(folder),
           "--only-summary", "--stop-timeout", "5"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 90)
    summary_file = folder / "summary.json"
    assert summary_file.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    with open(folder / "stats_stats.csv", newline="") as file:
        stats = {row["Name"]: row for row in csv.DictReader(file) if row["Name"] != "Aggregated"}
    with open(folder / "stats_failures.csv", newline="") as file:
        failures = list(csv.DictReader(file))
    return {"summary": json.loads(summary_file.read_text()), "stats": stats, "failures": failures,
            "output": done.stdout[-3000:] + done.stderr[-3000:]}


def _core(names) -> set[str]:
    return {name for name in names if not name.startswith(SAMPLED_FAMILIES)}


def _reasons(run: dict, names: set[str]) -> set[str]:
    """Failure texts of the given request names, without Locust's exception wrapper."""
    reasons = set()
    for row in run["failures"]:
        if row["Name"] in names:
            text = row["Error"]
            reasons.add(text.split("(", 1)[1].rstrip(")").strip("'\"") if text.startswith("CatchResponseError(") else text)
    return reasons


@pytest.mark.e2e
def test_both_clients_send_the_same_requests_without_failures_and_pass_the_oracle(tmp_path, service_factory):
    runs = {client: run_suite(tmp_path, client, service_factory().url) for client in CLIENTS}
    for client, run in runs.items():
        summary = run["summary"]
        assert summary["client"] == client
        assert summary["totals"]["failures"] == 0, (client, run["failures"][:5], run["output"])
        assert summary["consistency"]["passed"] is True, (client, summary["consistency"])
        assert summary["consistency"]["products_checked"] > 0
        assert set(HAPPY + NEGATIVE) <= set(run["stats"]), (client, sorted(run["stats"]))
        assert any(name.startswith("Get_Products_By_Category_") for name in run["stats"])
    fast, requests = (set(runs[c]["stats"]) for c in CLIENTS)
    assert _core(fast) == _core(requests), sorted(_core(fast) ^ _core(requests))
    for family in SAMPLED_FAMILIES:
        assert any(n.startswith(family) for n in fast) == any(n.startswith(family) for n in requests)


@pytest.mark.e2e
def test_both_clients_report_the_same_failure_reasons_against_a_failing_service(tmp_path, service_factory):
    runs = {client: run_suite(tmp_path, client, service_factory("--error-rate", "0.5").url) for client in CLIENTS}
    # Compare the requests that both runs sent often enough to have met every outcome.
    common = {name for name in _core(runs["fast"]["stats"]) & _core(runs["requests"]["stats"])
              if min(int(runs[c]["stats"][name]["Request Count"]) for c in CLIENTS) >= 30}
    assert {"Get_All_Products", "Get_Product_Details", "Buy_Product"} <= common
    fast, requests = (_reasons(runs[c], common) for c in CLIENTS)
    assert fast and fast == requests, (sorted(fast ^ requests))
    checks = [set(runs[c]["summary"]["custom_stats"]["validation_failures"]) for c in CLIENTS]
    assert checks[0] == checks[1] and "status" in checks[0]
    for client in CLIENTS:  # a failing service leaves buys of unknown outcome: the oracle may not pass, never fail
        assert runs[client]["summary"]["consistency"]["passed"] in (True, None), runs[client]["summary"]["consistency"]
