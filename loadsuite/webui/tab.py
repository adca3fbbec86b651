"""Our tab in Locust's web UI, "Verdict & custom stats": live custom stats and, once a test stops, the verdict.

Locust's documented way to extend its React UI: the template args `extended_tabs` and
`extended_tables` declare the tab and its columns, and an `extended_stats` entry merged into every
`/stats/requests` response (an `after_request` hook) carries the rows. Under a master the custom
stats are the workers' merged counters (event_hooks merges every worker report into the custom stats).

The page stops polling `/stats/requests` as soon as a test is no longer running, while the verdict is
computed just after the test stops; so the first poll that sees a stopped test waits (bounded) for
the verdict, and answers with the runner's state as it is then.

With Locust's `--web-login`, the UI asks for the user WEB_LOGIN_USER (default "locust") and the
password WEB_LOGIN_PASSWORD; Locust itself only provides the login page, not the check.
"""
from __future__ import annotations

import hmac
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent

from ..reporting.format import fmt_metric
from ..reporting.console import inconclusive_reason, scenario_notes
from ..reporting.verdict import violation_counts

TAB_KEY = "verdict"
TAB_TITLE = "Verdict & custom stats"
COLUMNS = (("section", "Section"), ("metric", "Metric"), ("scope", "Scope / key"), ("limit", "Limit"),
           ("observed", "Observed"), ("result", "Result"))
MAX_ROWS = 300  # the UI renders slowly with many rows (Locust caps its own tables at 500)
MAX_TEXT = 300  # a cell; a reason with a redirect Location fits
VERDICT_WAIT_S = 20.0
STOPPED_STATES = frozenset({"stopping", "cleanup", "stopped"})
STATS_ENDPOINT = "locust.request_stats"
SWARM_ENDPOINT = "locust.swarm"
DEFAULT_LOGIN_USER = "locust"

Summary = Callable[[], "dict[str, Any] | None"]


def install(environment, current_summary: Summary, custom_stats: Callable[[], dict[str, Any]],
            pending: Callable[[], object] = lambda: None) -> None:
    """Attach the tab to the web UI of this process (no-op without a web UI). `pending()` names the stopped test
    whose verdict is being worked out (None when there is none): the first poll after a stop waits for that one."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    if web_ui.web_login:
        install_login(environment, web_login_credentials())

    offer_default_classes(environment, web_ui)
    web_ui.template_args["extended_tabs"] = [{"key": TAB_KEY, "title": TAB_TITLE}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}]
    waiter = VerdictWaiter(current_summary, pending, VERDICT_WAIT_S)

    from flask import request  # only processes with a web UI need Flask

    @web_ui.app.after_request
    def add_verdict_rows(response):
        if request.endpoint != STATS_ENDPOINT or response.status_code != 200 or environment.runner is None:
            return response
        runner = environment.runner
        summary = waiter.summary_for(runner)
        report = dict(response.get_json())
        report["state"], report["user_count"] = runner.state, runner.user_count
        report["extended_stats"] = [{"key": TAB_KEY, "data": tab_rows(summary, custom_stats(), runner.state)}]
        response.set_data(json.dumps(report))
        return response


def offer_default_classes(environment, web_ui) -> None:
    """The class picker starts with the classes a default run uses and shows the real target.

    Locust's picker ticks every class it lists, so it lists the classes `select_user_classes` kept at init
    (ContentionUser only when named: `./run_tests.sh ui -- ContentionUser`), and its host column shows the
    run's target (--host), not the `host` attribute the classes carry from config.yaml.
    """
    kept = [cls.__name__ for cls in environment.user_classes]
    update_template_args = web_ui.update_template_args

    def update_with_defaults() -> None:
        update_template_args()
        args = web_ui.template_args
        if args.get("available_user_classes"):
            args["available_user_classes"] = [name for name in args["available_user_classes"] if name in kept]
        if args.get("users"):
            target = environment.host or args.get("host") or ""
            args["users"] = {name: {**user, "host": target or user.get("host")}
                             for name, user in args["users"].items() if name in kept}

    web_ui.update_template_args = update_with_defaults
    update_with_defaults()
    choose_on_demand_classes_only_by_name(environment, web_ui, kept)


def choose_on_demand_classes_only_by_name(environment, web_ui, kept: list[str]) -> None:
    """POST /swarm without user_classes runs every class Locust knows: an on-demand one (ContentionUser) only when
    this request names it, or the command line did (it is then among `kept`). Locust turns the request's choice
    into environment.user_classes in one method, `_update_user_classes`: the choice is filtered there, and the
    answer's user_classes list says what really runs."""
    from flask import has_request_context, request

    update_user_classes = web_ui._update_user_classes

    def update_chosen(user_classes) -> None:
        named = set(request.form.getlist("user_classes")) if has_request_context() else set()
        update_user_classes({name: cls for name, cls in user_classes.items()
                             if not getattr(cls, "on_demand", False) or name in named or name in kept})

    web_ui._update_user_classes = update_chosen

    @web_ui.app.after_request
    def say_what_runs(response):
        if request.endpoint == SWARM_ENDPOINT and response.status_code == 200 and response.is_json:
            answer = response.get_json()
            if isinstance(answer, dict) and "user_classes" in answer:
                answer["user_classes"] = sorted(cls.__name__ for cls in environment.user_classes)
                response.set_data(json.dumps(answer))
        return response


def web_login_credentials(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(user, password) for --web-login from WEB_LOGIN_USER / WEB_LOGIN_PASSWORD; exits 2 without a password."""
    env = os.environ if env is None else env
    password = env.get("WEB_LOGIN_PASSWORD", "")
    if not password:
        print("usage error: --web-login needs a password: set WEB_LOGIN_PASSWORD (and WEB_LOGIN_USER, default "
              f"{DEFAULT_LOGIN_USER!r})", file=sys.stderr, flush=True)
        raise SystemExit(2)
    return env.get("WEB_LOGIN_USER") or DEFAULT_LOGIN_USER, password


def install_login(environment, credentials: tuple[str, str]) -> None:
    """Locust's login page checks one user name and password (compared in constant time)."""
    from flask import Blueprint, redirect, request, session, url_for
    from flask_login import UserMixin, login_user

    web_ui = environment.web_ui
    expected_user, expected_password = credentials
    base_path = getattr(environment.parsed_options, "web_base_path", "") or ""

    class Operator(UserMixin):
        def __init__(self, name: str) -> None:
            self.id = name

    web_ui.login_manager.user_loader(lambda name: Operator(name) if name == expected_user else None)
    web_ui.app.config["SECRET_KEY"] = secrets.token_hex(32)  # sessions end when Locust stops
    web_ui.auth_args = {"username_password_callback": f"{base_path}/login_submit"}
    blueprint = Blueprint("suite_login", __name__, url_prefix=base_path or None)

    @blueprint.route("/login_submit", methods=["POST"])
    def login_submit():
        user = request.form.get("username", "")
        password = request.form.get("password", "")
        user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
        password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
        if user_ok and password_ok:
            login_user(Operator(user))
            return redirect(url_for("locust.index"))
        session["auth_error"] = "Invalid user name or password"
        return redirect(url_for("locust.login"))

    web_ui.app.register_blueprint(blueprint)


class VerdictWaiter:
    """Waits (at most VERDICT_WAIT_S per stopped test) for the verdict of the test that has just stopped; never for
    a test that has not stopped (the next test's first poll, while its start snapshot runs, answers at once)."""

    def __init__(self, current_summary: Summary, pending: Callable[[], object], wait_s: float = VERDICT_WAIT_S,
                 poll_s: float = 0.1) -> None:
        self.current_summary = current_summary
        self.pending = pending
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.waited_for: object = None  # the stopped test the deadline belongs to
        self.deadline = 0.0

    def summary_for(self, _runner=None) -> dict[str, Any] | None:
        test = self.pending()
        if test is None:
            return self.current_summary()
        if test is not self.waited_for:
            self.waited_for, self.deadline = test, time.monotonic() + self.wait_s
        while self.pending() is test and time.monotonic() < self.deadline:
            gevent.sleep(self.poll_s)
        return self.current_summary()


def tab_rows(summary: Mapping[str, Any] | None, live_stats: Mapping[str, Any], state: str) -> list[dict[str, str]]:
    """The tab's rows: the verdict, thresholds and oracle once a test stopped, then the custom stats."""
    stopped = state in STOPPED_STATES
    if summary is None:
        pending = "computing (reload the page if this stays)" if stopped else "shown when the test stops"
        rows = [_row("verdict", "overall", "run", result=pending)]
        custom, label = live_stats, ("final" if stopped else "live")
    else:
        rows = verdict_rows(summary)
        custom, label = summary.get("custom_stats") or live_stats, "final"
    rows.extend(custom_stat_rows(custom, label))
    if len(rows) > MAX_ROWS:
        hidden = len(rows) - MAX_ROWS + 1
        rows = rows[:MAX_ROWS - 1] + [_row("note", f"{hidden} more rows", "", result="see custom_report.csv")]
    return rows


def verdict_rows(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    """Overall verdict, one row per threshold, the consistency oracle and its violations."""
    verdict = summary.get("verdict") or {}
    reasons = "; ".join(verdict.get("reasons") or []) or "every threshold and the oracle passed"
    rows = [_row("verdict", "overall", "run", observed=reasons,
                 result="PASS" if verdict.get("passed") else "FAIL")]
    for threshold in summary.get("thresholds") or []:
        metric = str(threshold.get("metric", ""))
        relation = ">= " if metric == "min_rps" else "<= "
        rows.append(_row("threshold", metric, threshold.get("scope", ""),
                         limit=relation + format_value(metric, threshold.get("limit")),
                         observed=format_value(metric, threshold.get("observed")),
                         result="PASS" if threshold.get("passed") else "FAIL"))
    rows.extend(consistency_rows(summary.get("consistency") or {}))
    rows.extend(_row("scenario", note.partition(" did not run")[0], "", observed=note.partition(": ")[2],
                     result="did not run") for note in scenario_notes(summary))
    return rows


def consistency_rows(consistency: Mapping[str, Any]) -> list[dict[str, str]]:
    if not consistency.get("enabled"):
        return [_row("consistency", "inventory oracle", "", result="disabled")]
    passed = consistency.get("passed")
    violations = consistency.get("violations") or []
    total = consistency.get("violations_total", len(violations))
    observed = (f"{consistency.get('products_checked', 0)} products checked, "
                f"{consistency.get('inconclusive', 0)} inconclusive, {total} violations")
    result = {True: "passed", False: "FAILED"}.get(passed, "inconclusive")
    rows = [_row("consistency", "inventory oracle", "all products", limit="0 violations", observed=observed,
                 result=result)]
    why = inconclusive_reason(consistency)
    if why:
        rows.append(_row("consistency", "why inconclusive", "", observed=why, result="inconclusive"))
    units = consistency.get("violation_units") or {}
    for kind, count in violation_counts(consistency).items():
        size = f" ({units[kind]} units)" if units.get(kind) else ""
        rows.append(_row("consistency", f"{kind} violations", "all products", limit="0",
                         observed=f"{count}{size}", result="FAIL"))
    for violation in violations:
        rows.append(_row("violation", violation.get("kind", ""), violation.get("product", ""),
                         observed=violation.get("message", ""), result="FAIL"))
    return rows


def custom_stat_rows(custom: Mapping[str, Any], label: str) -> list[dict[str, str]]:
    """Purchases, units sold, insufficient stock, stock updates, validation failures by check, unexpected statuses."""
    rows = [_row("custom stat", name, "", observed=str(custom.get(name, 0)), result=label)
            for name in ("purchases", "units_sold", "insufficient_stock", "stock_updates")]
    for section, name in (("validation_failures", "validation failures"),
                          ("unexpected_statuses", "unexpected statuses")):
        counts = custom.get(section) or {}
        rows.append(_row("custom stat", name, "all", observed=str(sum(counts.values())), result=label))
        rows.extend(_row("custom stat", name, key, observed=str(value), result=label)
                    for key, value in sorted(counts.items()))
    for key, value in sorted((custom.get("business_outcomes") or {}).items()):
        if key != "insufficient_stock":
            rows.append(_row("custom stat", "business outcome", key, observed=str(value), result=label))
    return rows


format_value = fmt_metric  # the one renderer: the tab shows the digits the console shows


def _row(section: str, metric: str, scope: Any, limit: str = "", observed: str = "", result: str = "") -> dict[str, str]:
    # No "name" key: the UI sorts a table by "name" by default, and rows without one keep this order.
    return {"section": section, "metric": str(metric), "scope": str(scope), "limit": limit,
            "observed": str(observed)[:MAX_TEXT], "result": result}
