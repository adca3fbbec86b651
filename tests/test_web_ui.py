"""The "Verdict & custom stats" tab: rows, Locust's /stats/requests hook, and the real UI driven in Chromium."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from locust import HttpUser, task
from locust.env import Environment

from loadsuite.catalogue import read as read_catalogue

USER_TYPES = read_catalogue().weighted_user_types
from loadsuite.webui import tab as web_ui
from conftest import ROOT, free_port

CUSTOM = {"purchases": 7, "units_sold": 12, "insufficient_stock": 2, "stock_updates": 3,
          "business_outcomes": {"insufficient_stock": 2, "empty_category": 1},
          "validation_failures": {"product_schema": 4}, "unexpected_statuses": {"Buy_Product 500": 1}}

FAILED_SUMMARY = {
    "custom_stats": CUSTOM,
    "thresholds": [
        {"metric": "error_rate", "scope": "total", "limit": 0.01, "observed": 0.002, "passed": True},
        {"metric": "p95_ms", "scope": "Buy_Product", "limit": 500.0, "observed": 812.4, "passed": False},
        {"metric": "min_rps", "scope": "total", "limit": 5.0, "observed": None, "passed": False},
    ],
    "consistency": {"enabled": True, "passed": False, "products_checked": 20, "inconclusive": 1,
                    "violations": [{"product": "Laptop", "kind": "lost_update", "message": "stock 9, expected 8",
                                    "evidence": []}], "violations_total": 1},
    "verdict": {"passed": False, "exit_code": 1, "reasons": ["p95_ms Buy_Product 812 > 500", "consistency failed"]},
}
PASSED_SUMMARY = {**FAILED_SUMMARY,
                  "thresholds": [{"metric": "p95_ms", "scope": "total", "limit": 1000.0, "observed": 20.0,
                                  "passed": True}],
                  "consistency": {"enabled": True, "passed": True, "products_checked": 20, "inconclusive": 0,
                                  "violations": []},
                  "verdict": {"passed": True, "exit_code": 0, "reasons": []}}

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


def _find(rows, section, metric=None, scope=None):
    return [row for row in rows if row["section"] == section
            and (metric is None or row["metric"] == metric) and (scope is None or row["scope"] == scope)]


# The rows -------------------------------------------------------------------------------------------

def test_running_test_shows_live_custom_stats_and_a_pending_verdict():
    rows = web_ui.tab_rows(None, CUSTOM, "running")
    assert rows[0]["section"] == "verdict" and "when the test stops" in rows[0]["result"]
    assert _find(rows, "custom stat", "purchases")[0]["observed"] == "7"
    assert _find(rows, "custom stat", "units_sold")[0]["observed"] == "12"
    assert _find(rows, "custom stat", "insufficient_stock")[0]["observed"] == "2"
    assert _find(rows, "custom stat", "stock_updates")[0]["observed"] == "3"
    assert _find(rows, "custom stat", "validation failures", "product_schema")[0]["observed"] == "4"
    assert _find(rows, "custom stat", "unexpected statuses", "Buy_Product 500")[0]["observed"] == "1"
    assert {row["result"] for row in _find(rows, "custom stat")} == {"live"}
    assert not _find(rows, "threshold")


def test_stopped_test_shows_each_threshold_the_oracle_and_a_failed_verdict():
    rows = web_ui.tab_rows(FAILED_SUMMARY, {}, "stopped")
    overall = _find(rows, "verdict", "overall")[0]
    assert overall["result"] == "FAIL" and "p95_ms Buy_Product 812 > 500" in overall["observed"]
    assert rows.index(overall) == 0
    p95 = _find(rows, "threshold", "p95_ms", "Buy_Product")[0]
    assert (p95["limit"], p95["observed"], p95["result"]) == ("<= 500 ms", "812 ms", "FAIL")
    error_rate = _find(rows, "threshold", "error_rate", "total")[0]
    assert (error_rate["limit"], error_rate["observed"], error_rate["result"]) == ("<= 1.00%", "0.20%", "PASS")
    min_rps = _find(rows, "threshold", "min_rps", "total")[0]
    assert (min_rps["limit"], min_rps["observed"]) == (">= 5.0 req/s", "no requests")
    oracle = _find(rows, "consistency", "inventory oracle")[0]
    assert oracle["result"] == "FAILED" and "1 violations" in oracle["observed"] and "1 inconclusive" in oracle["observed"]
    violation = _find(rows, "violation", "lost_update", "Laptop")[0]
    assert violation["observed"] == "stock 9, expected 8" and violation["result"] == "FAIL"
    assert {row["result"] for row in _find(rows, "custom stat")} == {"final"}
    assert _find(rows, "custom stat", "purchases")[0]["observed"] == "7"


def test_undecided_and_disabled_oracle_are_named_as_such():
    inconclusive = {**PASSED_SUMMARY, "consistency": {"enabled": True, "passed": None, "violations": []}}
    assert _find(web_ui.tab_rows(inconclusive, {}, "stopped"), "consistency")[0]["result"] == "inconclusive"
    disabled = {**PASSED_SUMMARY, "consistency": {"enabled": False, "passed": None}}
    assert _find(web_ui.tab_rows(disabled, {}, "stopped"), "consistency")[0]["result"] == "disabled"
    assert _find(web_ui.tab_rows(PASSED_SUMMARY, {}, "stopped"), "verdict")[0]["result"] == "PASS"


def test_rows_keep_their_order_in_the_ui_and_stay_bounded():
    # The React table sorts by a "name" key by default; rows without one keep the order we give.
    many = {**CUSTOM, "validation_failures": {f"check_{i:04d}": 1 for i in range(1000)}}
    rows = web_ui.tab_rows({**PASSED_SUMMARY, "custom_stats": many}, {}, "stopped")
    assert all("name" not in row for row in rows)
    assert len(rows) == web_ui.MAX_ROWS and rows[-1]["section"] == "note"
    assert rows[0]["section"] == "verdict"


# Locust's web UI, in process ------------------------------------------------------------------------

class _QuietUser(HttpUser):
    host = "http://127.0.0.1:1"

    @task
    def nothing(self):
        pass


@pytest.fixture
def ui_env(monkeypatch):
    monkeypatch.setattr("sys.argv", ["locust"])  # Locust's UI parses the command line for its extra options
    environment = Environment(user_classes=[_QuietUser])
    environment.create_local_runner()
    environment.create_web_ui("127.0.0.1", 0, delayed_start=True)
    yield environment
    environment.runner.quit()


def _poll(environment) -> dict:
    response = environment.web_ui.app.test_client().get("/stats/requests")
    assert response.status_code == 200
    return response.get_json()


def _tab(report: dict) -> list[dict]:
    return next(entry["data"] for entry in report["extended_stats"] if entry["key"] == web_ui.TAB_KEY)


def test_install_does_nothing_without_a_web_ui():
    environment = Environment(user_classes=[_QuietUser])
    web_ui.install(environment, lambda: None, dict)
    assert environment.web_ui is None


def test_index_page_declares_the_tab_and_its_columns(ui_env):
    web_ui.install(ui_env, lambda: None, lambda: CUSTOM)
    html = ui_env.web_ui.app.test_client().get("/").get_data(as_text=True)
    args = ui_env.web_ui.template_args
    assert args["extended_tabs"] == [{"key": "verdict", "title": "Verdict & custom stats"}]
    assert [column["title"] for column in args["extended_tables"][0]["structure"]] == \
        ["Section", "Metric", "Scope / key", "Limit", "Observed", "Result"]
    assert "Verdict \\u0026 custom stats" in html or "Verdict & custom stats" in html


def test_stats_requests_carry_live_custom_stats_beside_locusts_own(ui_env):
    live = {"purchases": 1}
    web_ui.install(ui_env, lambda: None, lambda: live)
    report = _poll(ui_env)
    assert "stats" in report and report["state"] == "ready"
    assert _find(_tab(report), "custom stat", "purchases")[0]["observed"] == "1"
    live["purchases"] = 5  # the hook reads the counters on every poll, past Locust's own 2 s cache
    assert _find(_tab(_poll(ui_env)), "custom stat", "purchases")[0]["observed"] == "5"


def test_first_poll_after_a_stop_waits_for_the_verdict(ui_env):
    answers = iter([None, None, None])
    web_ui.install(ui_env, lambda: next(answers, FAILED_SUMMARY), lambda: CUSTOM)
    ui_env.runner.state = "stopped"
    report = _poll(ui_env)
    assert report["state"] == "stopped"
    assert _find(_tab(report), "verdict", "overall")[0]["result"] == "FAIL"
    assert _find(_tab(report), "threshold", "p95_ms", "Buy_Product")


def test_waiting_for_the_verdict_is_bounded_once_per_stop(ui_env, monkeypatch):
    monkeypatch.setattr(web_ui, "VERDICT_WAIT_S", 0.5)
    web_ui.install(ui_env, lambda: None, lambda: CUSTOM)
    ui_env.runner.state = "stopped"
    started = time.monotonic()
    first = _poll(ui_env)
    waited = time.monotonic() - started
    assert 0.4 <= waited < 3.0
    assert "computing" in _find(_tab(first), "verdict")[0]["result"]
    started = time.monotonic()
    _poll(ui_env)
    assert time.monotonic() - started < 0.4  # the same stop: no second wait


def test_web_login_admits_only_the_configured_operator(monkeypatch):
    monkeypatch.setattr("sys.argv", ["locust"])
    monkeypatch.setenv("WEB_LOGIN_USER", "ops")
    monkeypatch.setenv("WEB_LOGIN_PASSWORD", "s3cret")
    environment = Environment(user_classes=[_QuietUser])
    environment.create_local_runner()
    environment.create_web_ui("127.0.0.1", 0, web_login=True, delayed_start=True)
    try:
        web_ui.install(environment, lambda: None, lambda: CUSTOM)
        client = environment.web_ui.app.test_client()
        assert client.get("/stats/requests").status_code in (302, 401)
        denied = client.post("/login_submit", data={"username": "ops", "password": "wrong"})
        assert denied.status_code == 302 and "/login" in denied.headers["Location"]
        assert client.get("/stats/requests").status_code in (302, 401)
        admitted = client.post("/login_submit", data={"username": "ops", "password": "s3cret"})
        assert admitted.status_code == 302 and "/login" not in admitted.headers["Location"]
        report = client.get("/stats/requests")
        assert report.status_code == 200 and _tab(report.get_json())
    finally:
        environment.runner.quit()


def test_web_login_without_a_password_stops_with_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        web_ui.web_login_credentials({"WEB_LOGIN_USER": "ops"})
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "WEB_LOGIN_PASSWORD" in message
    assert web_ui.web_login_credentials({"WEB_LOGIN_PASSWORD": "x"}) == ("locust", "x")


# The real UI in Chromium --------------------------------------------------------------------------

def _wait_for_ui(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"./run_tests.sh ui exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the web UI did not answer at {url} within {timeout:.0f} s")


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


@pytest.fixture
def ui_suite(tmp_path):
    """`./run_tests.sh ui` on a free port in its own process group; the whole group is gone after the test."""
    port = free_port()
    results_root = tmp_path / "results"
    env = {**os.environ, "WEB_PORT": str(port), "RESULTS_ROOT": str(results_root), "USE_SYSTEM_PYTHON": "1",
           "PYTHON": str(Path(ROOT, ".venv", "bin", "python")), "STOP_TIMEOUT": "5"}
    env.pop("WEB_HOST", None)
    log = open(tmp_path / "run_tests.log", "wb")
    proc = subprocess.Popen(["./run_tests.sh", "ui"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for_ui(f"http://127.0.0.1:{port}/", proc)
        yield proc, port, results_root
    finally:
        pgid = proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = _group_members(pgid)
        for member in leftovers:
            member.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        assert not leftovers, f"processes left behind: {[p.pid for p in leftovers]}"


@pytest.mark.e2e
@pytest.mark.browser
def test_browser_swarm_shows_live_custom_stats_then_the_verdict(ui_suite, tmp_path):
    from playwright.sync_api import sync_playwright

    proc, port, results_root = ui_suite
    listening = [c for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening

    shot = tmp_path / "web_ui_verdict.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(f"http://127.0.0.1:{port}/")
            # The class picker starts with the classes a default run uses, ticked, and the run's real target.
            picker = page.locator("tbody tr", has=page.locator("input[type=checkbox]"))
            picker.first.wait_for()
            rows = {row.locator("td").nth(1).inner_text(): (row.locator("input[type=checkbox]").is_checked(),
                                                            row.locator("td").nth(2).inner_text())
                    for row in picker.all()}
            target = page.locator("input[name=host]").input_value()
            assert target.startswith("http://127.0.0.1:") and target != "http://127.0.0.1:8082", target
            assert rows == {name: (True, target) for name in USER_TYPES}, rows  # never ContentionUser
            page.fill("input[name=userCount]", "5")
            page.fill("input[name=spawnRate]", "5")
            page.get_by_role("button", name="Start").click()
            page.locator("td", has_text="Get_All_Products").first.wait_for()

            page.get_by_role("tab", name="Verdict & custom stats").click()
            purchases = page.locator("tr", has=page.locator("td", has_text="purchases"))
            purchases.first.wait_for()
            assert "live" in purchases.first.inner_text()
            assert page.locator("td", has_text="when the test stops").count() == 1

            page.get_by_role("button", name="Stop").click()
            overall = page.locator("tr", has=page.locator("td", has_text="overall"))
            overall.locator("td:text-is('PASS'), td:text-is('FAIL')").first.wait_for()
            shown = overall.first.inner_text()
            assert page.locator("tr", has=page.locator("td:text-is('threshold')")).count() >= 1
            assert page.locator("td", has_text="inventory oracle").count() == 1
            assert "final" in purchases.first.inner_text()
            page.screenshot(path=str(shot))
        finally:
            browser.close()

    assert shot.stat().st_size > 10_000
    summary = json.loads((results_root / "latest" / "summary.json").read_text())
    assert ("PASS" if summary["verdict"]["passed"] else "FAIL") in shown
    assert summary["user_classes"] == sorted(USER_TYPES) and summary["host"] == target
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        target = ROOT / "docs" / "img" / "web_ui_verdict.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
