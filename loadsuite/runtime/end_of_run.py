"""The end of a run: run the oracle, judge the thresholds, write summary.json, junit.xml, the CSVs and the HTML.

`finish(run, environment)` is idempotent per run; it is called when the process quits (headless) or as soon
as a test stops (web UI). The process exit code is the verdict's (0 pass, 1 fail).
"""
from __future__ import annotations

import atexit
import csv
import io
import logging
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from locust.runners import MasterRunner, WorkerRunner

from .. import SUITE_VERSION, openmodel, oracle
from ..oracle import wiring as oracle_wiring
from ..config.urls import redact
from ..reporting import verdict
from ..reporting.folders import FolderError, new_run_folder
from ..reporting.console import terminal_safe, use_colour
from ..distributed import final_reports
from .custom_stats import STATS
from .run import SuiteRun, locust_is_the_program, TestRun

logger = logging.getLogger("product_service_suite")


EXIT_UNWRITABLE = 4  # "results could not be written" (run_tests.sh --help, README)


def on_quitting(run: SuiteRun, environment, **_kwargs) -> None:
    test = run.test
    if isinstance(environment.runner, WorkerRunner) or test is None:
        return
    test.ending = True
    summary = finish(run, environment)
    _write_html_report(run, environment)
    _write_final_csv(run, environment)
    environment.process_exit_code = EXIT_UNWRITABLE if test.write_errors else summary["verdict"]["exit_code"]
    if test.write_errors:
        print(f"results could not be written ({test.write_errors[0]}): free space or fix permissions in "
              f"{results_dir(run, environment)}; the verdict above stands (exit code {EXIT_UNWRITABLE})",
              file=sys.stderr, flush=True)


def finish(run: SuiteRun, environment, test: TestRun | None = None) -> dict[str, Any]:
    """The end of a test, once per test: collect, judge, write. Returns the summary (what summary.json holds).

    Bound to its own TestRun (the current one unless given): in a web UI session the next test may start while this
    one is judged, and nothing here reads or writes that one's state. A full or read-only disk never hides the
    verdict: it is printed first, and every file that cannot be written is recorded in the test's write_errors
    (the exit code becomes 4)."""
    test = test or run.test
    if test.summary is not None:
        return test.summary
    collect(environment)
    summary = judge(run, environment, test)
    for amend in run.amenders:  # the capacity search puts its answer and verdict in
        summary = amend(summary)
    write(run, environment, summary, test)
    test.summary = summary
    return summary


def collect(environment) -> None:
    """Everything the judgement reads: every worker's last statistics (cached: done at test_stop, unless the
    run ended another way); the oracle collects its records and the final stock when it checks."""
    final_reports.collect(environment)


def judge(run: SuiteRun, environment, test: TestRun) -> dict[str, Any]:
    """Measure (Locust's and the custom statistics, read at once, before anything waits), then the oracle's check
    (it waits for the final stock), then the thresholds and the verdict, as the summary."""
    measured = measure(run, environment, test)
    oracle_result = oracle.finalize(environment) if run.config.oracle.enabled else None
    consistency = oracle_result.to_dict() if oracle_result is not None else {"enabled": False, "passed": None}
    consistency["enabled"] = oracle_result is not None
    if oracle_result is not None:
        consistency.update(oracle_wiring.receipt(environment))
    return build_summary(run, environment, consistency, measured, test)


def write(run: SuiteRun, environment, summary: dict[str, Any], test: TestRun) -> None:
    """The console lines, then custom_report.csv, summary.json and junit.xml; the verdict block comes last."""
    folder = results_dir(run, environment)
    print(custom_table(), flush=True)
    for line in summary["lost"]:
        print(f"lost: {terminal_safe(line)}", flush=True)
    if summary["setup_s"] >= 1:
        print(f"setup (start snapshot, contention stock) took {summary['setup_s']:g} s of the run's clock: "
              f"{summary['load_s']:g} s of load were applied", flush=True)
    written = all([_try_write(test, name, write) for name, write in (
        ("the results folder", lambda: folder.mkdir(parents=True, exist_ok=True)),
        ("custom_report.csv", lambda: write_custom_report(folder)),
        ("summary.json", lambda: verdict.write_summary(folder, summary)),
        ("junit.xml", lambda: verdict.write_junit(folder, summary)))])
    if not written:  # nothing for run_tests.sh to read the verdict from: the console gets it now
        print(verdict.verdict_table(summary, folder, use_colour(sys.stdout)), flush=True)
    # Otherwise the verdict block is printed once, as the last lines of the run: Locust prints its final stats
    # table after this listener, so run_tests.sh prints the block after Locust exits (python -m
    # loadsuite.cli.verdict), and Locust run directly (`locust -f locustfile.py`) prints it from an exit handler.
    elif os.environ.get(VERDICT_PRINTED_BY_WRAPPER) != "1" and locust_is_the_program():
        atexit.register(_print_verdict_last, summary, folder)


VERDICT_PRINTED_BY_WRAPPER = "LOADSUITE_VERDICT_LAST"  # run_tests.sh sets it and prints the block itself



def _print_verdict_last(summary: dict[str, Any], folder: Path) -> None:
    try:
        print(verdict.verdict_table(summary, folder, use_colour(sys.stdout)), flush=True)
    except (OSError, ValueError):  # stdout already closed: nothing left to show
        pass


def _try_write(test: TestRun, name: str, write) -> bool:
    try:
        write()
        return True
    except OSError as error:
        test.write_errors.append(f"{name}: {error.strerror or error.__class__.__name__}")
        logger.error("could not write %s: %s", name, error.strerror or error)
        return False


def measure(run: SuiteRun, environment, test: TestRun) -> dict[str, Any]:
    """What the summary takes from Locust's and the custom statistics, read in one go, without waiting: a next test
    (web UI) clears both when it starts."""
    stats = environment.stats
    ended = test.stopped_at or time.time()
    load_started = test.load_started_at or ended
    load_s = round(max(0.0, ended - load_started), 2)
    runner = environment.runner
    return {"totals": verdict.entry_metrics(stats.total), "endpoints": verdict.endpoint_rows(stats),
            "custom": STATS.snapshot(), "final_users": runner.user_count if runner else 0,
            "user_classes": sorted(cls.__name__ for cls in environment.user_classes), "ended": ended,
            "load_started": load_started, "load_s": load_s,
            "scenarios": {scenario.name: scenario.report(environment, load_s) for scenario in run.scenarios}}


def build_summary(run: SuiteRun, environment, consistency: dict[str, Any], measured: dict[str, Any],
                  test: TestRun) -> dict[str, Any]:
    config = run.config
    totals, endpoints = measured["totals"], measured["endpoints"]
    thresholds = verdict.evaluate_thresholds(totals, endpoints, config.thresholds)
    decision = verdict.decide(thresholds, consistency, config.thresholds.consistency)
    started = test.started_at
    ended = measured["ended"]
    options = environment.parsed_options
    planned = getattr(options, "run_time", None) if options else None
    runner = environment.runner
    lost = [client.id for client in runner.clients.all if client.state == "missing"] if isinstance(runner, MasterRunner) else []
    load_started, load_s = measured["load_started"], measured["load_s"]
    return {
        "run_id": results_dir(run, environment).name,
        "host": redact(environment.host or config.service.base_url),
        "bundled_service": run.bundled_service,
        "suite_version": SUITE_VERSION,
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_s": round(ended - started, 2),
        # load_s: seconds users could run (test start listeners done -> stop); setup_s: what the start snapshot
        # and contention setup took out of the run's -t clock (Locust arms it before they run).
        "load_s": load_s,
        "setup_s": round(max(0.0, load_started - started), 2),
        "interrupted": run.interrupted or (bool(planned) and (ended - started) < planned - max(5.0, planned * 0.1)),
        "client": config.service.client,
        "shape": config.load_shape.name,
        "users": {"peak": test.peak_users, "final": measured["final_users"]},
        "user_classes": measured["user_classes"],
        "workers": {"count": test.peak_workers, "lost": lost},
        "totals": totals,
        "endpoints": endpoints,
        "custom_stats": measured["custom"],
        "thresholds": verdict.threshold_dicts(thresholds),
        "consistency": consistency,
        "open_model": openmodel.summary(environment),
        # what each scenario the verdict relies on did (the flash sale: whether it opened, else why not)
        "scenarios": measured["scenarios"],
        "monitoring": run.monitor.stats() if run.monitor is not None else None,
        "lost": [f"worker {worker}: stopped answering (no heartbeat); its traffic after that and its oracle records "
                 f"never arrived, so its buys are unknown to the oracle" for worker in lost],
        "verdict": decision,
    }


def results_dir(run: SuiteRun, environment) -> Path:
    """--results-dir, else the folder of --csv, else a new results/<run id> (made once per process)."""
    if run.results_dir is None:
        options = environment.parsed_options
        chosen = getattr(options, "results_dir", "") if options else ""
        csv_prefix = getattr(options, "csv_prefix", None) if options else None
        if chosen:
            run.results_dir = Path(chosen)
        elif csv_prefix and os.path.dirname(csv_prefix):
            run.results_dir = Path(os.path.dirname(csv_prefix))
        else:  # Locust run directly: a folder of this run's own, even when another starts in the same second
            try:
                run.results_dir = new_run_folder(Path("results"), run.run_id)
            except FolderError:  # the writes that follow record why (exit code 4)
                run.results_dir = Path("results") / run.run_id
    return run.results_dir


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")  # what a spreadsheet would run as a formula (OWASP's list)


_SURROGATE = re.compile("[\ud800-\udfff]")


def csv_cell(value: object) -> object:
    """A custom_report.csv cell a spreadsheet shows as text: a text cell that starts like a formula gets a leading
    apostrophe (a key can carry text from a worker or a category name), a lone surrogate (no UTF-8 for it: the
    write would fail) becomes U+FFFD; numbers stay numbers."""
    if not isinstance(value, str):
        return value
    value = _SURROGATE.sub("\ufffd", value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def write_custom_report(folder: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", "key", "value"])
    writer.writerows([csv_cell(cell) for cell in row] for row in STATS.rows())
    path = folder / "custom_report.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def custom_table() -> str:
    lines = ["", "=== Custom statistics " + "=" * 50]
    for metric, key, value in STATS.rows():
        lines.append(f"{terminal_safe(metric + (' ' + key if key else '')):<60}{value:>12}")
    return "\n".join(lines)


def guard_locust_csv_writer() -> None:
    """Locust's once-a-second CSV writer raises on a full disk: a traceback from its greenlet, and another
    from close_files() at exit that skips the exit code. Stop it with one logged line instead; the final
    CSVs are rewritten by _write_final_csv, which records the failure (exit code 4). Idempotent."""
    from locust.stats import StatsCSVFileWriter
    if getattr(StatsCSVFileWriter, "_suite_guarded", False):
        return
    write, close = StatsCSVFileWriter.stats_writer, StatsCSVFileWriter.close_files

    def stats_writer(self) -> None:
        try:
            write(self)
        except OSError as error:
            logger.error("Locust's CSV writer stopped: %s", error.strerror or error)

    def close_files(self) -> None:
        try:
            close(self)
        except OSError as error:
            logger.error("Locust's CSV files could not be closed: %s", error.strerror or error)

    StatsCSVFileWriter.stats_writer, StatsCSVFileWriter.close_files = stats_writer, close_files
    StatsCSVFileWriter._suite_guarded = True


def take_over_html_report(run: SuiteRun, environment) -> None:
    """Write report.html ourselves, after summary.json: Locust writes it before the quitting hooks run, and
    an error there (a full disk) would skip them all; it also skips it on SIGTERM. Called from init."""
    options = environment.parsed_options
    html_file = getattr(options, "html_file", None) if options else None
    if html_file and "{" not in html_file and not isinstance(environment.runner, WorkerRunner):
        run.html_file, options.html_file = html_file, None


def _write_html_report(run: SuiteRun, environment) -> None:
    if not run.html_file:
        return
    from locust.html import get_html_report
    try:
        html = get_html_report(environment, show_download_link=False)
    except Exception as error:  # a report must never turn a finished run into a crash
        logger.error("could not build %s: %s", run.html_file, error)
        return
    path = Path(run.html_file)
    _try_write(run.test, path.name, lambda: (path.parent.mkdir(parents=True, exist_ok=True),
                                        path.write_text(redact_text(html, environment.host), encoding="utf-8")))


def _write_final_csv(run: SuiteRun, environment) -> None:
    """Locust rewrites its CSVs once a second and not at the end (locust#1806, #2299): write the final
    stats, failures and exceptions so the CSVs agree with summary.json and the console."""
    options = environment.parsed_options
    prefix = getattr(options, "csv_prefix", None) if options else None
    if not prefix:
        return
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv),
                          ("_exceptions.csv", writer.exceptions_csv)):
        def rewrite(path=prefix + suffix, write=write) -> None:
            with open(path, "w", newline="", encoding="utf-8") as file:
                write(csv.writer(file))
        _try_write(run.test, Path(prefix + suffix).name, rewrite)


def redact_text(text: str, url: str | None) -> str:
    """text with a URL's user info (if any slipped through) replaced, as redact() does."""
    if url and "@" in url:
        return text.replace(url, redact(url))
    return text


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
