"""Every Locust event listener of the suite, registered in one visible place: register(), called by the locustfile.

What runs where: workers ship their custom stats (and oracle records) to the master; the master or
the single local process snapshots stock, sets up the contention product, and at the end runs the
oracle, judges the thresholds and writes custom_report.csv, summary.json and junit.xml into the
run's results folder, then sets the process exit code (0 pass, 1 fail).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gevent
from locust.runners import MasterRunner, WorkerRunner

import inventory_oracle
import latency_correction
import monitoring
import pacing
import verdict
import web_ui
from config_loader import SuiteConfig, influxdb_token
from run_stats import STATS

logger = logging.getLogger("product_service_suite")

CONTENTION_USER = "ContentionUser"


class RunState:
    """What the listeners learn during a run and the summary needs at the end."""

    def __init__(self) -> None:
        self.config: SuiteConfig | None = None
        # run_tests.sh exports RUN_ID to the master and every worker so their points and records agree.
        self.run_id = os.environ.get("RUN_ID") or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.results_dir: Path | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.peak_users = 0
        self.peak_workers = 0
        self.contended_product: str | None = None
        self.monitor = None
        self.finalized: dict[str, Any] | None = None
        self.interrupted = False
        self.trimmer = None


RUN = RunState()


def register(events, config: SuiteConfig) -> None:
    """Attach the suite's listeners to Locust's events (once per process)."""
    RUN.config = config
    events.init_command_line_parser.add_listener(_add_arguments)
    events.init.add_listener(_on_init)
    events.test_start.add_listener(_on_test_start)
    events.spawning_complete.add_listener(_on_spawning_complete)
    events.test_stopping.add_listener(_on_test_stopping)
    events.test_stop.add_listener(_on_test_stop)
    events.report_to_master.add_listener(_send_run_stats)
    events.worker_report.add_listener(_merge_run_stats)
    events.quitting.add_listener(_on_quitting)


def contended_product(host: str) -> str | None:
    """The product ContentionUser buys: configured, or the first catalogue name (the same on every worker)."""
    if RUN.contended_product is None and RUN.config is not None:
        RUN.contended_product = RUN.config.contention.product or _first_product_name(host)
    return RUN.contended_product


# Listeners -----------------------------------------------------------------------------------------

def _add_arguments(parser) -> None:
    parser.add_argument("--results-dir", default="", include_in_web_ui=False,
                        help="Folder for summary.json, junit.xml and custom_report.csv (default: the --csv folder)")


def _on_init(environment, **_kwargs) -> None:
    _watch_interrupts()
    _select_user_classes(environment)
    pacing.attach(environment)
    latency_correction.install(environment)  # after pacing: listens only when an open model is active
    config = RUN.config
    if config.oracle.enabled:
        inventory_oracle.install(environment, config.oracle)
    web_ui.install(environment)
    RUN.monitor = monitoring.install(environment, config.monitoring.influxdb, influxdb_token(), RUN.run_id,
                                     custom_stats=STATS.snapshot)
    # Locust arms the --run-time timer right after init; gevent's loop clock still reads the time the loop
    # last ran (before the locustfile import and these listeners), so the run would end that much early.
    gevent.get_hub().loop.update_now()


def _on_test_start(environment, **_kwargs) -> None:
    STATS.reset()
    RUN.started_at, RUN.stopped_at, RUN.finalized = time.time(), None, None
    RUN.peak_users = 0
    if isinstance(environment.runner, WorkerRunner):
        return
    if RUN.trimmer is None or RUN.trimmer.dead:
        RUN.trimmer = gevent.spawn(_trim_per_second_counters, environment)
    if any(cls.__name__ == CONTENTION_USER for cls in environment.user_classes):
        _prepare_contention(environment)


def _on_spawning_complete(user_count: int, **_kwargs) -> None:
    RUN.peak_users = max(RUN.peak_users, user_count)


def _on_test_stopping(environment, **_kwargs) -> None:
    runner = environment.runner
    RUN.peak_users = max(RUN.peak_users, runner.user_count if runner else 0)
    if isinstance(runner, MasterRunner):
        RUN.peak_workers = max(RUN.peak_workers, len(runner.clients.all))


def _on_test_stop(environment, **_kwargs) -> None:
    RUN.stopped_at = time.time()
    if environment.web_ui is not None and not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(finalize, environment)  # the UI shows the verdict as soon as a test stops


def current_summary() -> dict[str, Any] | None:
    """The last finished run's summary (what summary.json holds), or None while a run is going on."""
    return RUN.finalized


def _trim_per_second_counters(environment, keep_seconds: int = 60, every_seconds: float = 60.0) -> None:
    """Keep soak runs flat: Locust keeps one requests-per-second counter per name per second forever,
    but only the last ~12 s feed its current rate (reports use totals and stats.history)."""
    while True:
        gevent.sleep(every_seconds)
        trim_per_second_counters(environment.stats, time.time() - keep_seconds)


def trim_per_second_counters(stats, before: float) -> int:
    """Drop per-second counters older than `before` (epoch seconds) from every entry; returns how many."""
    cutoff, dropped = int(before), 0
    for entry in (stats.total, *stats.entries.values()):
        for counters in (entry.num_reqs_per_sec, entry.num_fail_per_sec):
            old = [second for second in counters if second < cutoff]
            for second in old:
                del counters[second]
            dropped += len(old)
    return dropped


def _send_run_stats(client_id, data, **_kwargs) -> None:
    data["run_stats"] = STATS.drain()


def _merge_run_stats(client_id, data, **_kwargs) -> None:
    if "run_stats" in data:
        STATS.merge(data["run_stats"])


def _on_quitting(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner) or RUN.started_at is None:
        return
    summary = finalize(environment)
    environment.process_exit_code = summary["verdict"]["exit_code"]
    _ensure_html_report(environment)
    _write_final_csv(environment)


# The end of a run ----------------------------------------------------------------------------------

def finalize(environment) -> dict[str, Any]:
    """Run the oracle, judge the thresholds, write the run's reports; idempotent per run."""
    if RUN.finalized is not None:
        return RUN.finalized
    config = RUN.config
    folder = results_dir(environment)
    folder.mkdir(parents=True, exist_ok=True)
    oracle_result = inventory_oracle.finalize(environment) if config.oracle.enabled else None
    consistency = oracle_result.to_dict() if oracle_result is not None else {"enabled": False, "passed": None}
    consistency["enabled"] = oracle_result is not None
    custom = STATS.snapshot()
    write_custom_report(folder, custom)
    summary = build_summary(environment, consistency, custom)
    verdict.write_summary(folder, summary)
    verdict.write_junit(folder, summary)
    print(custom_table(custom), flush=True)
    print(verdict.verdict_table(summary), flush=True)
    print(f"results: {folder}", flush=True)
    RUN.finalized = summary
    return summary


def build_summary(environment, consistency: dict[str, Any], custom: dict[str, Any]) -> dict[str, Any]:
    config = RUN.config
    stats = environment.stats
    totals = verdict.entry_metrics(stats.total)
    endpoints = verdict.endpoint_rows(stats)
    thresholds = verdict.evaluate_thresholds(totals, endpoints, config.thresholds)
    decision = verdict.decide(thresholds, consistency, config.thresholds.consistency)
    started = RUN.started_at or time.time()
    ended = RUN.stopped_at or time.time()
    options = environment.parsed_options
    planned = getattr(options, "run_time", None) if options else None
    runner = environment.runner
    lost = [client.id for client in runner.clients.all if client.state == "missing"] if isinstance(runner, MasterRunner) else []
    return {
        "run_id": results_dir(environment).name,
        "host": environment.host or config.service.base_url,
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_s": round(ended - started, 2),
        "interrupted": RUN.interrupted or (bool(planned) and (ended - started) < planned - max(5.0, planned * 0.1)),
        "client": config.service.client,
        "shape": config.load_shape.name,
        "users": {"peak": RUN.peak_users, "final": runner.user_count if runner else 0},
        "user_classes": sorted(cls.__name__ for cls in environment.user_classes),
        "workers": {"count": RUN.peak_workers, "lost": lost},
        "totals": totals,
        "endpoints": endpoints,
        "custom_stats": custom,
        "thresholds": verdict.threshold_dicts(thresholds),
        "consistency": consistency,
        "open_model": pacing.achieved_vs_target(environment),
        "corrected_latency": latency_correction.summary(environment),
        "monitoring": RUN.monitor.stats() if RUN.monitor is not None else None,
        "verdict": decision,
    }


def results_dir(environment) -> Path:
    """--results-dir, else the folder of --csv, else results/<run id>."""
    if RUN.results_dir is None:
        options = environment.parsed_options
        chosen = getattr(options, "results_dir", "") if options else ""
        csv_prefix = getattr(options, "csv_prefix", None) if options else None
        if chosen:
            RUN.results_dir = Path(chosen)
        elif csv_prefix and os.path.dirname(csv_prefix):
            RUN.results_dir = Path(os.path.dirname(csv_prefix))
        else:
            RUN.results_dir = Path("results") / RUN.run_id
    return RUN.results_dir


def write_custom_report(folder: Path, custom: dict[str, Any]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", "key", "value"])
    writer.writerows(STATS.rows())
    path = folder / "custom_report.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def custom_table(custom: dict[str, Any]) -> str:
    lines = ["", "=== Custom statistics " + "=" * 50]
    for metric, key, value in STATS.rows():
        lines.append(f"{metric + (' ' + key if key else ''):<60}{value:>12}")
    return "\n".join(lines)


# Helpers --------------------------------------------------------------------------------------------

def _select_user_classes(environment) -> None:
    """ContentionUser runs only when asked for (by class name or tag); classes left without tasks by tag filtering are dropped."""
    if isinstance(environment.runner, WorkerRunner):
        return  # the master decides which classes run (the UI's class picker may send ContentionUser)
    options = environment.parsed_options
    named = set(getattr(options, "user_classes", None) or []) if options else set()
    tags = set(getattr(options, "tags", None) or []) if options else set()
    excluded = set(getattr(options, "exclude_tags", None) or []) if options else set()
    keep = []
    for cls in environment.user_classes:
        if cls.__name__ == CONTENTION_USER and CONTENTION_USER not in named and "contention" not in tags:
            continue
        if (tags or excluded) and not any(_task_selected(task, tags, excluded) for task in cls.tasks):
            continue
        keep.append(cls)
    if not keep:
        raise SystemExit(_usage_error("no user class has a task left after --tags/--exclude-tags: check the tag names"))
    environment.user_classes[:] = keep


def _watch_interrupts() -> None:
    """Remember a Ctrl-C (run_tests.sh turns SIGTERM into SIGINT too) so the summary says the run was cut short.

    The KeyboardInterrupt goes to the main greenlet only, where locust.main catches it and shuts down: a
    plain signal handler raises it in whichever greenlet happens to run (the hub, or on a master the one
    that receives the workers' messages), which kills that greenlet and prints a traceback.
    """
    def on_interrupt() -> None:
        RUN.interrupted = True
        hub = gevent.get_hub()
        hub.loop.run_callback(hub.parent.throw, KeyboardInterrupt)  # what gevent does with a KeyboardInterrupt

    try:
        gevent.signal_handler(signal.SIGINT, on_interrupt)
    except ValueError:  # not the main thread (an embedded Environment): nothing to watch
        pass


def _task_selected(task, tags: set[str], excluded: set[str]) -> bool:
    task_tags = getattr(task, "locust_tag_set", set())
    if tags and not task_tags & tags:
        return False
    return not task_tags & excluded


def _usage_error(message: str) -> int:
    print(f"usage error: {message}", file=sys.stderr, flush=True)
    return 2


def _prepare_contention(environment) -> None:
    """Set the contended product to a known stock before any buy (recorded for the oracle)."""
    host = environment.host or RUN.config.service.base_url
    name = contended_product(host)
    if name is None:
        logger.error("contention: no product to contend for (the catalogue is empty or unreachable)")
        return
    stock = RUN.config.contention.stock
    body = json.dumps({"name": name, "stock": stock}).encode()
    outcome = "failed"
    try:
        request = urllib.request.Request(f"{host}/products/stock", data=body, method="PATCH",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=RUN.config.service.request_timeout_seconds) as response:
            outcome = "ok" if response.status == 200 else "failed"
    except urllib.error.HTTPError as error:
        outcome = "rejected" if 400 <= error.code < 500 else "failed"
    except OSError as error:
        logger.error("contention: could not set the stock of %r: %s", name, error)
    # Not recorded in the ledger: the oracle's own test_start listener runs after this one, clears the
    # ledger and snapshots the start stock, so this value is the oracle's starting point.
    logger.info("contention: %r set to stock %d (%s)", name, stock, outcome)


def _first_product_name(host: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{host}/products", timeout=RUN.config.service.request_timeout_seconds) as response:
            products = json.loads(response.read())["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    names = sorted(product["name"] for product in products if isinstance(product, dict) and "name" in product)
    return names[0] if names else None


def _ensure_html_report(environment) -> None:
    """Locust writes report.html on a normal end and on Ctrl-C but not on SIGTERM: write it if missing."""
    options = environment.parsed_options
    html_file = getattr(options, "html_file", None) if options else None
    if not html_file or "{" in html_file:
        return
    path = Path(html_file)
    if path.exists() and RUN.started_at and path.stat().st_mtime >= RUN.started_at:
        return
    try:
        from locust.html import get_html_report
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(get_html_report(environment, show_download_link=False), encoding="utf-8")
    except Exception as error:  # a report must never turn a finished run into a crash
        logger.error("could not write %s: %s", html_file, error)


def _write_final_csv(environment) -> None:
    """Locust rewrites its CSVs once a second and not at the end (locust#1806, #2299): write the final
    stats, failures and exceptions so the CSVs agree with summary.json and the console."""
    options = environment.parsed_options
    prefix = getattr(options, "csv_prefix", None) if options else None
    if not prefix:
        return
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    try:
        for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv),
                              ("_exceptions.csv", writer.exceptions_csv)):
            with open(prefix + suffix, "w", newline="", encoding="utf-8") as file:
                write(csv.writer(file))
    except OSError as error:
        logger.error("could not write the final CSV files of %s: %s", prefix, error)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
