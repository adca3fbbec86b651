"""The end of a run: run the oracle, judge the thresholds, write summary.json, junit.xml, the CSVs and the HTML.

`finish(run, environment)` is idempotent per run; it is called when the process quits (headless) or as soon
as a test stops (web UI). The process exit code is the verdict's (0 pass, 1 fail).
"""
from __future__ import annotations

import csv
import io
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from locust.runners import MasterRunner, WorkerRunner

from .. import openmodel, oracle
from ..reporting import verdict
from .custom_stats import STATS
from .run import SuiteRun

logger = logging.getLogger("product_service_suite")


def on_quitting(run: SuiteRun, environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner) or run.started_at is None:
        return
    summary = finish(run, environment)
    environment.process_exit_code = summary["verdict"]["exit_code"]
    _ensure_html_report(run, environment)
    _write_final_csv(environment)


def finish(run: SuiteRun, environment) -> dict[str, Any]:
    """Run the oracle, judge the thresholds, write the run's reports; idempotent per run."""
    if run.finalized is not None:
        return run.finalized
    config = run.config
    folder = results_dir(run, environment)
    folder.mkdir(parents=True, exist_ok=True)
    oracle_result = oracle.finalize(environment) if config.oracle.enabled else None
    consistency = oracle_result.to_dict() if oracle_result is not None else {"enabled": False, "passed": None}
    consistency["enabled"] = oracle_result is not None
    custom = STATS.snapshot()
    write_custom_report(folder)
    summary = build_summary(run, environment, consistency, custom)
    verdict.write_summary(folder, summary)
    verdict.write_junit(folder, summary)
    print(custom_table(), flush=True)
    print(verdict.verdict_table(summary), flush=True)
    print(f"results: {folder}", flush=True)
    run.finalized = summary
    return summary


def build_summary(run: SuiteRun, environment, consistency: dict[str, Any], custom: dict[str, Any]) -> dict[str, Any]:
    config = run.config
    stats = environment.stats
    totals = verdict.entry_metrics(stats.total)
    endpoints = verdict.endpoint_rows(stats)
    thresholds = verdict.evaluate_thresholds(totals, endpoints, config.thresholds)
    decision = verdict.decide(thresholds, consistency, config.thresholds.consistency)
    started = run.started_at or time.time()
    ended = run.stopped_at or time.time()
    options = environment.parsed_options
    planned = getattr(options, "run_time", None) if options else None
    runner = environment.runner
    lost = [client.id for client in runner.clients.all if client.state == "missing"] if isinstance(runner, MasterRunner) else []
    return {
        "run_id": results_dir(run, environment).name,
        "host": environment.host or config.service.base_url,
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_s": round(ended - started, 2),
        "interrupted": run.interrupted or (bool(planned) and (ended - started) < planned - max(5.0, planned * 0.1)),
        "client": config.service.client,
        "shape": config.load_shape.name,
        "users": {"peak": run.peak_users, "final": runner.user_count if runner else 0},
        "user_classes": sorted(cls.__name__ for cls in environment.user_classes),
        "workers": {"count": run.peak_workers, "lost": lost},
        "totals": totals,
        "endpoints": endpoints,
        "custom_stats": custom,
        "thresholds": verdict.threshold_dicts(thresholds),
        "consistency": consistency,
        "open_model": openmodel.summary(environment),
        "monitoring": run.monitor.stats() if run.monitor is not None else None,
        "verdict": decision,
    }


def results_dir(run: SuiteRun, environment) -> Path:
    """--results-dir, else the folder of --csv, else results/<run id>."""
    if run.results_dir is None:
        options = environment.parsed_options
        chosen = getattr(options, "results_dir", "") if options else ""
        csv_prefix = getattr(options, "csv_prefix", None) if options else None
        if chosen:
            run.results_dir = Path(chosen)
        elif csv_prefix and os.path.dirname(csv_prefix):
            run.results_dir = Path(os.path.dirname(csv_prefix))
        else:
            run.results_dir = Path("results") / run.run_id
    return run.results_dir


def write_custom_report(folder: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", "key", "value"])
    writer.writerows(STATS.rows())
    path = folder / "custom_report.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def custom_table() -> str:
    lines = ["", "=== Custom statistics " + "=" * 50]
    for metric, key, value in STATS.rows():
        lines.append(f"{metric + (' ' + key if key else ''):<60}{value:>12}")
    return "\n".join(lines)


def _ensure_html_report(run: SuiteRun, environment) -> None:
    """Locust writes report.html on a normal end and on Ctrl-C but not on SIGTERM: write it if missing."""
    options = environment.parsed_options
    html_file = getattr(options, "html_file", None) if options else None
    if not html_file or "{" in html_file:
        return
    path = Path(html_file)
    if path.exists() and run.started_at and path.stat().st_mtime >= run.started_at:
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
