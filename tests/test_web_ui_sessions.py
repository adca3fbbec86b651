"""The web UI across tests (issue 31): a new test never waits on the previous one's end-of-run work, and an
on-demand user type (ContentionUser) runs only when chosen, by the picker or by the API."""
from __future__ import annotations

import time

import pytest
from locust import HttpUser, task
from locust.env import Environment

from loadsuite.webui import tab as web_ui


class Shopper(HttpUser):
    host = "http://127.0.0.1:1"

    @task
    def nothing(self):
        pass


class Contender(HttpUser):
    host = "http://127.0.0.1:1"
    on_demand = True

    @task
    def nothing(self):
        pass


@pytest.fixture
def picker_ui(monkeypatch):
    monkeypatch.setattr("sys.argv", ["locust"])
    classes = {"Shopper": Shopper, "Contender": Contender}
    environment = Environment(user_classes=[Shopper], available_user_classes=classes)
    environment.create_local_runner()
    environment.create_web_ui("127.0.0.1", 0, delayed_start=True, userclass_picker_is_active=True)
    environment.runner.start = lambda *args, **kwargs: None  # the choice is what is tested, not a swarm
    yield environment
    environment.runner.quit()


def _swarm(environment, **form):
    data = {"user_count": "1", "spawn_rate": "1", "host": "http://127.0.0.1:1", **form}
    answer = environment.web_ui.app.test_client().post("/swarm", data=data)
    assert answer.status_code == 200 and answer.get_json()["success"], answer.get_json()
    return answer.get_json()


def test_a_swarm_request_without_user_classes_never_runs_an_on_demand_class(picker_ui):
    web_ui.install(picker_ui, lambda: None, dict)
    answer = _swarm(picker_ui)
    assert [cls.__name__ for cls in picker_ui.user_classes] == ["Shopper"]
    assert answer["user_classes"] == ["Shopper"]  # the answer says what runs


def test_a_swarm_request_that_names_an_on_demand_class_runs_it(picker_ui):
    web_ui.install(picker_ui, lambda: None, dict)
    answer = _swarm(picker_ui, user_classes=["Contender"])
    assert [cls.__name__ for cls in picker_ui.user_classes] == ["Contender"] and answer["user_classes"] == ["Contender"]
    both = _swarm(picker_ui, user_classes=["Shopper", "Contender"])
    assert both["user_classes"] == ["Contender", "Shopper"]


def test_an_on_demand_class_named_on_the_command_line_is_offered_and_kept(picker_ui):
    picker_ui.user_classes = [Shopper, Contender]  # what select_user_classes keeps for `-- Contender`
    web_ui.install(picker_ui, lambda: None, dict)
    assert sorted(picker_ui.web_ui.template_args["available_user_classes"]) == ["Contender", "Shopper"]
    assert _swarm(picker_ui)["user_classes"] == ["Contender", "Shopper"]


def test_the_picker_lists_only_the_classes_a_default_run_uses(picker_ui):
    web_ui.install(picker_ui, lambda: None, dict)
    assert picker_ui.web_ui.template_args["available_user_classes"] == ["Shopper"]


def test_the_first_poll_of_a_new_test_never_waits_for_a_verdict(picker_ui, monkeypatch):
    """The next test has started (its start snapshot still runs, so Locust's runner still says stopped): its
    summary does not exist yet and is not awaited; only a test that stopped is."""
    monkeypatch.setattr(web_ui, "VERDICT_WAIT_S", 5)
    web_ui.install(picker_ui, lambda: None, dict, pending=lambda: None)
    picker_ui.runner.state = "stopped"
    started = time.monotonic()
    report = picker_ui.web_ui.app.test_client().get("/stats/requests").get_json()
    assert time.monotonic() - started < 1.0
    assert report["state"] == "stopped"


def test_suite_run_awaits_only_a_stopped_test(monkeypatch):
    from loadsuite.config import parse_config
    from loadsuite.runtime.run import SuiteRun, TestRun

    run = SuiteRun(parse_config({}))
    assert run.verdict_pending() is None
    run.test = TestRun(started_at=time.time())
    assert run.verdict_pending() is None  # running, or just started: nothing to wait for
    run.test.stopped_at = time.time()
    assert run.verdict_pending() is run.test
    run.test.summary = {"verdict": {}}
    assert run.verdict_pending() is None


# The real UI: ./run_tests.sh ui against a hostile target, two tests back to back, and Chromium -------------------

def _post(url: str, data: dict | None = None) -> dict:
    import json
    import urllib.parse
    import urllib.request

    body = urllib.parse.urlencode(data or {}, doseq=True).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as answer:
        return json.loads(answer.read())


def _get(url: str, timeout: float = 60) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def _tab_rows(report: dict) -> list[dict]:
    return next(entry["data"] for entry in report.get("extended_stats") or [] if entry["key"] == web_ui.TAB_KEY)


@pytest.mark.e2e
@pytest.mark.browser
def test_two_tests_back_to_back_against_hostile_names_in_the_real_ui(tmp_path):
    import json
    import os
    import signal
    import subprocess

    from conftest import ROOT, free_port
    from lying_shop import HOSTILE, running
    from suite_runs import suite_env, write_config
    from test_web_ui import BROWSER_ARGS, _group_members, _wait_for_ui

    config = write_config(tmp_path, {"wait_time": {"min_seconds": 0.05, "max_seconds": 0.2},
                                     "flash_sale": {"start_seconds": 0.5, "duration_seconds": 2}})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running("--hostile-names", "--lose-every-buy", "--slow-products", "1.5") as shop:
        env = suite_env(tmp_path / "results", {"WEB_PORT": str(port), "STOP_TIMEOUT": "3"})
        log = open(tmp_path / "ui.log", "wb")
        proc = subprocess.Popen(["./run_tests.sh", "ui", shop, "--config", str(config)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_ui(base + "/", proc)
            form = {"user_count": "4", "spawn_rate": "4", "host": shop}
            first = _post(base + "/swarm", form)  # no user_classes, as a script calling the API sends it
            assert first["success"] and "ContentionUser" not in first["user_classes"], first
            time.sleep(4)
            _post(base + "/stop")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                rows = _tab_rows(_get(base + "/stats/requests"))
                if any(row["section"] == "violation" for row in rows):
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"no verdict in the tab: {rows}")
            summary = json.loads((tmp_path / "results" / "latest" / "summary.json").read_text())
            assert "ContentionUser" not in summary["user_classes"] and summary["totals"]["requests"] > 0
            assert HOSTILE[0] in {row["scope"] for row in rows if row["section"] == "violation"}  # the best-seller

            from playwright.sync_api import sync_playwright
            dialogs = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
                    page.set_default_timeout(30_000)
                    page.goto(base + "/")
                    page.get_by_role("tab", name="Verdict & custom stats").click()
                    page.locator("td", has_text="inventory oracle").first.wait_for()
                    shown = page.locator("td").all_inner_texts()
                    assert any("</script><svg onload=alert(1)> Red Alert" in text for text in shown), shown  # text
                    assert page.locator("svg[onload]").count() == 0 and page.locator("b", has_text="bold").count() == 0
                finally:
                    browser.close()
            assert dialogs == [], "a name from the target ran as script"

            # The next test: its first poll comes while its start snapshot (a 1.5-s /products) still runs.
            second = _post(base + "/swarm", form)
            assert second["success"]
            started = time.monotonic()
            report = _get(base + "/stats/requests", timeout=30)
            assert time.monotonic() - started < 3.0, "the new test's poll waited on the previous test's verdict"
            assert report["state"] in ("stopped", "spawning", "running")
            deadline = time.monotonic() + 30
            while _get(base + "/stats/requests")["state"] not in ("spawning", "running"):
                assert time.monotonic() < deadline, "the second test never started"
                time.sleep(0.2)
            _post(base + "/stop")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            for member in _group_members(proc.pid):
                member.kill()
            log.close()
    assert "Traceback" not in (tmp_path / "ui.log").read_text(errors="replace")
