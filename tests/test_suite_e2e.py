"""End to end: ./run_tests.sh headless against the reference service, judged from what it leaves behind."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from conftest import free_port
from loadsuite import catalogue
from suite_runs import RESULT_FILES, assert_summary_schema, request_names, run_suite, write_config

pytestmark = pytest.mark.e2e

SHOP = catalogue.read()
HAPPY_TASKS = tuple(name for name in SHOP.user_types["ProductServiceUser"].tasks if name in SHOP.scenario_tasks)
NEGATIVE_TASKS = SHOP.negative_tasks
# Every task's request name (or name prefix, for tasks that pick a variant per request).
EXACT_NAMES = ("Get_All_Products", "Get_Product_Details", "Buy_Product", "Update_Product_Stock", "Invalid_Path",
               "Health_Check", "Details_Unknown_Product", "Buy_Unknown_Product", "Buy_Beyond_Stock",
               "Missing_Category")
NAME_PREFIXES = ("Get_Products_By_Category_", "Edge_Case_", "Invalid_Buy_Payload_", "Invalid_Stock_Payload_")
HAPPY_NAMES = ("Get_All_Products", "Get_Product_Details", "Buy_Product", "Update_Product_Stock", "Health_Check")
BROWSER_NAMES = {"Get_All_Products", "Get_Product_Details", "Health_Check"}  # plus Get_Products_By_Category_*


def quick_config(**sections) -> dict:
    """Short think time and only the full-mix user, so a few seconds exercise every task."""
    return {
        "wait_time": {"min_seconds": 0.02, "max_seconds": 0.08},
        "user_types": {name: int(name == "ProductServiceUser") for name in SHOP.weighted_user_types},
        **sections,
    }


# Tasks that pick one of many variants per run get more weight, so a few seconds see every variant.
VARIANT_TASKS = {task for task in (*HAPPY_TASKS, *NEGATIVE_TASKS) if "edge_case" in task or "payload" in task}
FULL_MIX = quick_config(
    scenario_weights={task: 4 if task in VARIANT_TASKS else 2 for task in HAPPY_TASKS},
    negative_weights={task: 2 if task in VARIANT_TASKS else 1 for task in NEGATIVE_TASKS},
)


def missing_names(names: set[str]) -> list[str]:
    missing = [name for name in EXACT_NAMES if name not in names]
    missing += [prefix + "*" for prefix in NAME_PREFIXES if not any(n.startswith(prefix) for n in names)]
    return missing


# (a) the full mix with both clients -------------------------------------------------------------------

CLIENTS = ("fast", "requests")


@pytest.fixture(scope="module")
def full_mix_runs(tmp_path_factory):
    """One 8-second run of the whole task mix against the bundled service per client, made on first use."""
    runs = {}

    def run_for(client: str):
        if client not in runs:
            tmp = tmp_path_factory.mktemp(f"full-mix-{client}")
            config = write_config(tmp, FULL_MIX)
            extra = () if client == "fast" else ("--no-analysis",)  # the analysis is exercised once
            runs[client] = run_suite("headless", "5", "8", "--config", str(config), "--client", client,
                                     "--spawn-rate", "5", *extra, results_root=tmp / "results", timeout=120)
        return runs[client]
    return run_for


@pytest.fixture(params=CLIENTS)
def full_mix_run(request, full_mix_runs):
    return full_mix_runs(request.param)


def test_full_mix_exercises_every_task_with_zero_failures(full_mix_run):
    run = full_mix_run
    assert run.returncode == 0, run.explain()
    stats = run.stats()
    names = request_names(run)
    assert not missing_names(names), f"tasks without requests: {missing_names(names)}; saw {sorted(names)}"
    failing = {name: row["Failure Count"] for name, row in stats.items() if row["Failure Count"]}
    assert not failing, f"failures against the reference service: {failing}\n{run.failures()}"
    assert all(stats[name]["Request Count"] > 0 and stats[name]["Failure Count"] == 0 for name in HAPPY_NAMES)


def test_full_mix_results_folder_is_complete(full_mix_run):
    run = full_mix_run
    folder = run.folder
    assert folder.parent == run.results_root, run.explain()
    for name in RESULT_FILES:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and len(html) > 10_000 and "Get_All_Products" in html
    latest = run.results_root / "latest"
    assert latest.is_symlink() and latest.resolve() == folder.resolve()

    summary = run.summary()
    assert_summary_schema(summary)
    assert summary["run_id"] == folder.name
    assert summary["client"] == run.args[run.args.index("--client") + 1]
    assert summary["verdict"] == {"passed": True, "exit_code": 0, "reasons": []}
    assert summary["consistency"]["passed"] is True and summary["consistency"]["violations"] == []
    assert summary["users"]["peak"] == 5 and summary["user_classes"] == ["ProductServiceUser"]
    assert summary["custom_stats"]["purchases"] > 0

    junit = ET.parse(folder / "junit.xml").getroot()
    cases = junit.findall("testcase")
    assert len(cases) == len(summary["thresholds"]) + 1 and junit.get("failures") == "0"

    custom = run.custom_report()
    assert custom[("purchases", "")] == summary["custom_stats"]["purchases"]
    assert custom[("stock_updates", "")] == summary["custom_stats"]["stock_updates"]


def test_full_mix_custom_stats_agree_with_locust_stats(full_mix_run):
    summary = full_mix_run.summary()
    endpoints = {row["name"]: row for row in summary["endpoints"]}
    custom = summary["custom_stats"]
    buys = endpoints["Buy_Product"]
    # every Buy_Product answer is a purchase, an expected INSUFFICIENT_STOCK, or a failure
    assert custom["purchases"] + custom["insufficient_stock"] == buys["requests"] - buys["failures"]
    updates = endpoints["Update_Product_Stock"]
    assert custom["stock_updates"] == updates["requests"] - updates["failures"]


def test_stats_csv_holds_the_final_numbers_of_the_run(full_mix_run):
    """stats_stats.csv must agree with summary.json and the console (Locust writes it once a second only)."""
    stats = full_mix_run.stats()
    summary = full_mix_run.summary()
    assert stats["Aggregated"]["Request Count"] == summary["totals"]["requests"], (
        "stats_stats.csv misses the requests of the run's last second")
    for row in summary["endpoints"]:
        assert stats[row["name"]]["Request Count"] == row["requests"], row["name"]


def coverage(names: set[str]) -> set[str]:
    """Request names with the per-request variants folded into their task's prefix."""
    return {next((p + "*" for p in NAME_PREFIXES if name.startswith(p)), name) for name in names}


def test_both_clients_cover_the_same_request_names(full_mix_runs):
    fast, requests_client = (full_mix_runs(client) for client in CLIENTS)
    assert fast.returncode == requests_client.returncode == 0, fast.explain() + requests_client.explain()
    assert coverage(request_names(fast)) == coverage(request_names(requests_client))
    assert {fast.summary()["client"], requests_client.summary()["client"]} == set(CLIENTS)


# (b) failures carry the validator's reason -----------------------------------------------------------

def test_injected_500s_are_failures_with_the_validators_reason(tmp_path, service_factory):
    service = service_factory("--error-rate", "0.3")
    config = write_config(tmp_path, quick_config())
    run = run_suite("headless", "3", "5", service.url, "--config", str(config), "--spawn-rate", "3", "--no-analysis",
                    results_root=tmp_path / "results")
    assert run.returncode == 1, run.explain()
    reasons = {row["Error"] for row in run.failures()}
    assert any("status: expected 200, saw 500" in reason for reason in reasons), reasons
    assert all("Traceback" not in reason for reason in reasons)
    summary = run.summary()
    assert summary["totals"]["failures"] > 0
    assert any(reason.startswith("FAIL: error_rate total") for reason in summary["verdict"]["reasons"]), summary["verdict"]
    assert any(key.endswith(" 500") for key in summary["custom_stats"]["unexpected_statuses"])
    junit = ET.parse(run.folder / "junit.xml").getroot()
    failing = [c.get("name") for c in junit.findall("testcase") if c.find("failure") is not None]
    assert "error_rate total" in failing


# (c) an unreachable target ------------------------------------------------------------------------------

def test_unreachable_host_exits_3_fast_with_a_clear_message(tmp_path):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    run = run_suite("headless", "2", "5", f"http://127.0.0.1:{port}", results_root=tmp_path / "results", timeout=60)
    assert run.returncode == 3, run.explain()
    assert time.monotonic() - started < 20
    assert f"127.0.0.1:{port} is unreachable" in run.stderr and "Traceback" not in run.stderr + run.stdout
    assert not run.role("locust") and not run.role("master"), "Locust must not start against a dead target"


# (d) a threshold breach -------------------------------------------------------------------------------

def test_latency_above_p95_threshold_fails_and_a_generous_threshold_passes(tmp_path, service_factory):
    service = service_factory("--latency-ms", "60:80")
    config = write_config(tmp_path, quick_config())
    common = ("headless", "3", "4", service.url, "--config", str(config), "--spawn-rate", "3", "--no-analysis",
              "--", "--tags", "browse", "health")

    strict = run_suite(*common[:8], "--threshold", "p95_ms=20", "--threshold", "p99_ms=5000", *common[8:],
                       results_root=tmp_path / "strict")
    assert strict.returncode == 1, strict.explain()
    junit = ET.parse(strict.folder / "junit.xml").getroot()
    cases = {c.get("name"): c for c in junit.findall("testcase")}
    failure = cases["p95_ms total"].find("failure")
    assert failure is not None and "limit <= 20 ms" in failure.get("message")
    assert cases["p99_ms total"].find("failure") is None
    summary = strict.summary()
    [p95] = [t for t in summary["thresholds"] if t["metric"] == "p95_ms" and t["scope"] == "total"]
    assert p95["observed"] >= 60 and p95["passed"] is False

    generous = run_suite(*common[:8], "--threshold", "p95_ms=5000", *common[8:], results_root=tmp_path / "generous")
    assert generous.returncode == 0, generous.explain()
    junit = ET.parse(generous.folder / "junit.xml").getroot()
    assert junit.get("failures") == "0"
    assert generous.summary()["totals"]["p95_ms"] >= 60  # the latency was there, the limit allowed it


# (e) tags and user classes pass through to Locust ------------------------------------------------------

def test_tag_browse_runs_only_get_all_products(tmp_path):
    config = write_config(tmp_path, quick_config())
    run = run_suite("headless", "2", "3", "--config", str(config), "--spawn-rate", "2", "--no-analysis",
                    "--", "--tags", "browse", results_root=tmp_path / "results")
    assert run.returncode == 0, run.explain()
    assert request_names(run, with_requests=False) == {"Get_All_Products"}
    assert run.stats()["Get_All_Products"]["Request Count"] > 0


def test_user_class_on_the_command_line_runs_only_its_tasks(tmp_path):
    config = write_config(tmp_path, {"wait_time": {"min_seconds": 0.02, "max_seconds": 0.08}})
    run = run_suite("headless", "3", "4", "--config", str(config), "--spawn-rate", "3", "--no-analysis",
                    "--", "BrowserUser", results_root=tmp_path / "results")
    assert run.returncode == 0, run.explain()
    names = request_names(run, with_requests=False)
    unexpected = {n for n in names if n not in BROWSER_NAMES and not n.startswith("Get_Products_By_Category_")}
    assert not unexpected, f"BrowserUser sent {sorted(unexpected)}"
    assert "Get_All_Products" in names and len(names) >= 3, names
    assert run.summary()["user_classes"] == ["BrowserUser"]
