"""One test run as the suite's listeners see it: its state, its start (classes, contention) and its stop.

event_hooks.register() makes one SuiteRun per process and attaches its listeners; nothing here registers
itself. The end of the run (oracle, verdict, reports) is in end_of_run.py.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import termios
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import gevent
from locust.runners import MasterRunner, WorkerRunner

from .. import catalogue
from ..config import SuiteConfig
from ..config.urls import normalise_base_url
from ..names import CONTENTION_USER
from ..oracle.records import stock_update_outcome
from ..transport.service_client import ServiceClient, first_product_name
from ..distributed import final_reports
from .custom_stats import STATS

logger = logging.getLogger("product_service_suite")


@dataclass
class TestRun:
    """One test (a headless run, or one test of a web UI session): everything it accumulates lives here or in a
    part that SuiteRun resets with it, so the next test never sees this one's."""

    __test__ = False  # not a pytest class
    started_at: float
    stopped_at: float | None = None
    load_started_at: float | None = None  # when the test_start listeners (setup) were done
    peak_users: int = 0
    peak_workers: int = 0
    ending: bool = False  # the end (oracle, reports) has begun: an interrupt no longer cuts it
    summary: dict[str, Any] | None = None  # what summary.json holds, once written
    write_errors: list[str] = field(default_factory=list)


class SuiteRun:
    """This process's suite: its config, the current test (TestRun), and the parts to reset when one starts."""

    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        # run_tests.sh exports RUN_ID to the master and every worker so their points and records agree.
        self.run_id = os.environ.get("RUN_ID") or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        # run_tests.sh started the bundled reference service for this run (on a port of its own each time).
        self.bundled_service = os.environ.get("LOADSUITE_BUNDLED_SERVICE") == "1"
        self.results_dir: Path | None = None
        self.test: TestRun | None = None  # None until the first test starts
        # Every part's per-test state, reset with the new TestRun (event_hooks.register adds the parts).
        self.resets: list[Callable[[TestRun], None]] = [lambda _test: STATS.reset()]
        self.amenders: list[Callable[[dict[str, Any]], dict[str, Any]]] = []  # change the summary before it is written
        self.scenarios: list = []  # begin(test) with every test, report(environment, load_s) in its summary
        self.contended: str | None = None
        self.monitor = None
        self.interrupted = False
        self.interrupts = 0
        self.trimmer: gevent.Greenlet | None = None
        self.html_file: str | None = None  # report.html, written by end_of_run after summary.json
        self.hung_up = False  # the terminal closed (SIGHUP): output goes to console.log
        self._watching = False

    @property
    def ending(self) -> bool:
        return self.test is not None and self.test.ending

    def test_started_at(self) -> float | None:
        """When the current test started (epoch seconds), None before the first."""
        return self.test.started_at if self.test is not None else None

    def current_summary(self) -> dict[str, Any] | None:
        """The last finished test's summary (what summary.json holds), or None while a test is going on."""
        return self.test.summary if self.test is not None else None

    def verdict_pending(self) -> TestRun | None:
        """The test whose verdict is being worked out (it stopped, its summary is not written yet), else None: the web
        tab waits for that one only, never for a test that has just started."""
        test = self.test
        return test if test is not None and test.stopped_at is not None and test.summary is None else None

    def contended_product(self, host: str) -> str | None:
        """The product ContentionUser buys: configured, or the first catalogue name (the same on every worker)."""
        if self.contended is None:
            self.contended = self.config.contention.product or first_product_name(
                host, self.config.service.request_timeout_seconds)
        return self.contended

    # Listeners (attached by event_hooks.register) ---------------------------------------------------

    def on_test_start(self, environment, **_kwargs) -> None:
        """The first test_start listener: a new TestRun, and every part's per-test state reset, in one place."""
        self.test = TestRun(started_at=time.time())
        for reset in self.resets:
            reset(self.test)
        if isinstance(environment.runner, WorkerRunner):
            return
        if self.trimmer is None or self.trimmer.dead:
            self.trimmer = gevent.spawn(_trim_per_second_counters, environment)
        if any(cls.__name__ == CONTENTION_USER for cls in environment.user_classes):
            self._prepare_contention(environment)

    def on_load_start(self, **_kwargs) -> None:
        """The last test_start listener: setup is done, users start now, unless an interrupt came during setup."""
        self.test.load_started_at = time.time()
        if self.interrupted and gevent.getcurrent() is not gevent.get_hub().parent:
            # Locust fires test_start in the greenlet that then spawns the users: ending it here (GreenletExit
            # passes through Locust's listener guard, quietly) means no user starts after the signal.
            logger.info("interrupted during setup: no user is started")
            raise gevent.GreenletExit

    def on_spawning_complete(self, user_count: int, **_kwargs) -> None:
        if self.test is not None:
            self.test.peak_users = max(self.test.peak_users, user_count)

    def on_test_stopping(self, environment, **_kwargs) -> None:
        test = self.test
        if test is None:  # quitting a web UI where no test ran: Locust stops its idle runner too
            return
        test.ending = True
        runner = environment.runner
        test.peak_users = max(test.peak_users, runner.user_count if runner else 0)
        if isinstance(runner, MasterRunner):
            test.peak_workers = max(test.peak_workers, len(runner.clients.all))

    def on_test_stop(self, environment, finish: Callable[[Any], Any], **_kwargs) -> None:
        test = self.test
        if test is None:  # no test ran: nothing to judge or write
            return
        test.stopped_at = time.time()
        test.ending = True
        final_reports.collect(environment)  # master: every worker's last statistics, before anything reads them
        if environment.web_ui is not None and not isinstance(environment.runner, WorkerRunner):
            def finish_then_allow_quit() -> None:  # the UI shows the verdict as soon as a test stops
                try:
                    finish(environment, test)  # this test's, even if the next one starts meanwhile
                finally:
                    test.ending = False  # between tests, Ctrl-C quits the web UI as usual
            gevent.spawn(finish_then_allow_quit)

    def watch_interrupts(self) -> None:
        """Remember a Ctrl-C, SIGTERM (run_tests.sh turns it into SIGINT) or hangup so the summary says the run was
        cut short, and stop the run gracefully on the first of them.

        The KeyboardInterrupt goes to the main greenlet only, where locust.main catches it and shuts down: a
        plain signal handler raises it in whichever greenlet happens to run (the hub, or on a master the one
        that receives the workers' messages), which kills that greenlet and prints a traceback.
        Under run_tests.sh (LOADSUITE_SUPERVISED) a terminal's Ctrl-C arrives twice, from the terminal and
        forwarded by the script, which owns the second-interrupt rule: later interrupts are ignored here.
        """
        if self._watching:
            return
        self._watching = True
        supervised = os.environ.get("LOADSUITE_SUPERVISED") == "1"

        def on_interrupt() -> None:
            self.interrupts += 1
            if self.interrupts > 1:
                if supervised:
                    return
                print("second interrupt: stopped at once without waiting for users or reports", file=sys.stderr,
                      flush=True)
                os._exit(130)
            if self.ending:  # the load is over; the oracle and the reports have deadlines: let them finish
                print("interrupt: the run is already ending; writing its results (a second interrupt stops at once)",
                      file=sys.stderr, flush=True)
                return
            self.interrupted = True
            hub = gevent.get_hub()
            hub.loop.run_callback(hub.parent.throw, KeyboardInterrupt)  # what gevent does with a KeyboardInterrupt

        def on_hangup(_signum, _frame) -> None:
            # The terminal is gone: every later write to it would fail (EIO), so output goes to the run's
            # console.log (or nowhere) from this instant, before any greenlet runs again.
            if self.hung_up:
                return
            self.hung_up = True
            _redirect_output(os.environ.get("LOADSUITE_CONSOLE_LOG") or os.devnull)
            if self.interrupts == 0:
                gevent.get_hub().loop.run_callback(on_interrupt)

        _keyboard_restore_survives_a_closed_terminal()
        try:
            gevent.signal_handler(signal.SIGINT, on_interrupt)
            signal.signal(signal.SIGHUP, on_hangup)
        except ValueError:  # not the main thread (an embedded Environment): nothing to watch
            pass

    def _prepare_contention(self, environment) -> None:
        """Set the contended product to a known stock before any buy (the oracle's start snapshot follows)."""
        host = environment.host or self.config.service.base_url
        name = self.contended_product(host)
        if name is None:
            logger.error("contention: no product to contend for (the catalogue is empty or unreachable)")
            return
        stock = self.config.contention.stock
        status = ServiceClient(host, self.config.service.request_timeout_seconds).set_stock(name, stock)
        outcome = stock_update_outcome(status or 0, status == 200)
        # Not recorded in the ledger: the oracle's own test_start listener runs after this one, clears the
        # ledger and snapshots the start stock, so this value is the oracle's starting point.
        logger.info("contention: %r set to stock %d (%s)", name, stock, outcome)


def _keyboard_restore_survives_a_closed_terminal() -> None:
    """Locust's key poller restores the terminal's mode as it ends, in a finally block; once the terminal has
    closed (SIGHUP) that raises termios.error and gevent prints a traceback into console.log: nothing is left
    to restore then."""
    from locust import input_events
    restore = input_events.UnixKeyPoller.cleanup
    if getattr(restore, "survives_a_closed_terminal", False):
        return

    def cleanup(poller) -> None:
        try:
            restore(poller)
        except (termios.error, OSError):
            pass

    cleanup.survives_a_closed_terminal = True
    input_events.UnixKeyPoller.cleanup = cleanup


def _redirect_output(path: str) -> None:
    """Point this process's stdout and stderr (the file descriptors, so Locust's own writers follow) at path."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


def locust_is_the_program(argv: list[str] | None = None) -> bool:
    """`locust ...` or `python -m locust ...`: not a test or another program embedding the suite."""
    argv = sys.argv if argv is None else argv
    program = Path(argv[0] if argv else "")
    return program.name == "locust" or (program.name == "__main__.py" and program.parent.name == "locust")


def refuse_bad_locust_arguments(config: SuiteConfig, argv: list[str] | None = None) -> None:
    """When Locust itself runs the locustfile: its user classes, tags and --host checked as run_tests.sh checks
    them (one line, exit 2, before any traffic). Inside other programs (pytest, an embedded Environment) nothing."""
    argv = sys.argv if argv is None else argv
    if not locust_is_the_program(argv):
        return
    try:
        catalogue.check_locust_arguments(argv[1:], config)
    except catalogue.CatalogueError as error:
        print(f"usage error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def normalise_host(environment) -> None:
    """--host as run_tests.sh's HOST: trailing slash dropped, path prefix kept (user info was refused earlier)."""
    if environment.host:
        try:
            environment.host = normalise_base_url(environment.host)
        except ValueError as error:
            print(f"usage error: --host {error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


def select_user_classes(environment) -> None:
    """On-demand classes (ContentionUser) run only when asked for: named, or a tag of one of their tasks chosen;
    classes left without tasks (by their weights or by tag filtering) are dropped."""
    if isinstance(environment.runner, WorkerRunner):
        return  # the master decides which classes run (the UI's class picker may send ContentionUser)
    options = environment.parsed_options
    named = set(getattr(options, "user_classes", None) or []) if options else set()
    tags = set(getattr(options, "tags", None) or []) if options else set()
    excluded = set(getattr(options, "exclude_tags", None) or []) if options else set()
    keep = []
    for cls in environment.user_classes:
        if getattr(cls, "on_demand", False) and cls.__name__ not in named and not any(
                getattr(task, "locust_tag_set", set()) & tags for task in cls.tasks):
            continue
        if not cls.tasks or ((tags or excluded) and not any(_task_selected(task, tags, excluded) for task in cls.tasks)):
            continue
        keep.append(cls)
    if not keep:
        print("usage error: no user class has a task left after --tags/--exclude-tags: check the tag names",
              file=sys.stderr, flush=True)
        raise SystemExit(2)
    environment.user_classes[:] = keep


def _task_selected(task, tags: set[str], excluded: set[str]) -> bool:
    task_tags = getattr(task, "locust_tag_set", set())
    if tags and not task_tags & tags:
        return False
    return not task_tags & excluded


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
