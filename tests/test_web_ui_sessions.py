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
