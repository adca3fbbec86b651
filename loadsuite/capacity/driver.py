"""The capacity search run inside one Locust process: every step is one test of that process, as in the web UI.

Why one process: starting Locust costs about 2 s, a step 2-20 s; a test of a running process starts in a few
milliseconds and keeps every part (the executor, the oracle's snapshots and worker records, final reports) as
they are for any test. A step: set the rate, start the test (the oracle snapshots the stock), offer the rate for
the warm-up, reset Locust's statistics (so only the plateau is judged), offer it for the plateau, stop starting
(the achieved rate is read now), let what is in flight finish (its latency counts: the backlog is the point),
stop the test and judge it with the run's own `end_of_run.judge`: the thresholds (whole-step, and windowed
where the verdict has windows), the oracle on that step's records, the verdict. Distributed: the master resets
its statistics; workers report every 3 s, so a step's boundaries are as sharp as that (plateaus of 10 s or more
make it negligible; docs/capacity.md).

`install(run, environment, ...)` (from event_hooks, only with --capacity-search) starts the search once the
first test has started and ends the process when it is done; `amend(summary)` adds the answer to summary.json.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

import gevent
import psutil
from gevent.event import Event
from locust.runners import CPU_WARNING_THRESHOLD, MasterRunner
from locust.stats import calculate_response_time_percentile

from .. import openmodel
from ..config.schema import CapacityConfig
from ..runtime.attach import attach_listeners
from . import report
from .search import Next, Search

logger = logging.getLogger("product_service_suite")

FIRST_OVERHEAD_S = 1.0  # a step's cost beyond its warm-up and plateau (start, drain, stop, oracle) until measured
DRAIN_POLL_S = 0.05


class Step(dict):
    """One step's figures (a dict: steps.csv and capacity.json write them as they are)."""


class CapacityDriver:
    """The search's state in this process: the search, the steps run, the budget, and how it ended."""

    def __init__(self, run, environment, config: CapacityConfig, require_rps: float | None) -> None:
        self.run, self.environment, self.config, self.require_rps = run, environment, config, require_rps
        self.search = Search(config.start_rps, config.growth, config.tolerance, config.max_rps)
        self.steps: list[Step] = []
        self.started_at: float | None = None
        self.deadline: float | None = None
        self.current: Next | None = None  # the step being run (interrupted: not judged)
        self.interrupted = False
        self.finished = False
        self._first_test = Event()
        self._stop = Event()
        self._greenlet: gevent.Greenlet | None = None
        self._overhead_s = FIRST_OVERHEAD_S
        self._last_step = False  # the budget leaves room for this confirmation only
        self._process = psutil.Process()

    # Listeners ---------------------------------------------------------------------------------------------

    def on_test_start(self, **_kwargs) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        self._first_test.set()

    def stop(self) -> None:
        """Quitting (Ctrl-C, SIGTERM, the end): no new step; the one running is not judged."""
        if not self.finished:
            self.interrupted = True
            self.search.stop("interrupted")
        self._stop.set()

    # The search --------------------------------------------------------------------------------------------

    def budget_line(self) -> str:
        c = self.config
        return (f"capacity search: at most {c.time_budget_seconds:g} s (capacity.time_budget_seconds); rates from "
                f"{c.start_rps:g} req/s x{c.growth:g} up to {c.max_rps:g}, bisected to {c.tolerance:.0%}; each step "
                f"{c.warmup_seconds:g} s warm-up + {c.plateau_seconds:g} s judged, the answer confirmed for "
                f"{c.confirm_seconds:g} s")

    def _run(self) -> None:
        try:
            self._search()
        except gevent.GreenletExit:
            raise
        except Exception:  # the search must never take the run down: what was proven is still written
            logger.exception("capacity search failed")
            self.search.stop("the search failed (see the log)")
        finally:
            self.finished = True
            self._write()
            if not self._stop.is_set():
                self.environment.runner.quit()

    def _search(self) -> None:
        print(self.budget_line(), file=sys.stderr, flush=True)
        self.started_at = time.time()
        self.deadline = self.started_at + self.config.time_budget_seconds
        first = True
        while not self._stop.is_set():
            step = self.search.next()
            if step is None:
                break
            step = self._within_budget(step)
            if step is None:
                break
            self.current = step
            figures = self._run_step(step, first)
            first = False
            if figures is None:  # interrupted or out of time inside the step: not judged
                break
            self.current = None
            self.steps.append(figures)
            self.search.record(step, figures["outcome"])
            if self._last_step:
                self.search.stop(self._budget_spent())
            print(report.step_line(figures), file=sys.stderr, flush=True)
            self._write()

    def _cost(self, step: Next) -> float:
        c = self.config
        return c.warmup_seconds + (c.confirm_seconds if step.kind == "confirm" else c.plateau_seconds) + self._overhead_s

    def _within_budget(self, step: Next) -> Next | None:
        """The step if it fits in what is left, keeping room to confirm the highest passing rate; else that
        confirmation as the last step if it fits; else None: the budget ends the search."""
        left = self.deadline - time.time()
        lo = self.search.lo
        confirm = Next(lo, "confirm") if lo is not None and self.search.confirmed != lo else None
        reserve = self._cost(confirm) if step.kind == "step" and confirm is not None else 0.0
        if self._cost(step) + reserve <= left:
            return step
        if step.kind == "step" and confirm is not None and self._cost(confirm) <= left:
            self._last_step = True
            return confirm
        self.search.stop(self._budget_spent())
        return None

    def _budget_spent(self) -> str:
        return f"time budget: {self.config.time_budget_seconds:g} s spent (capacity.time_budget_seconds)"

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds`; False when the search must stop now (an interrupt, or the budget ends first)."""
        if time.time() + seconds > self.deadline:
            self._stop.wait(max(0.0, self.deadline - time.time()))
            self.search.stop(self._budget_spent())
            return False
        self._stop.wait(seconds)
        return not self._stop.is_set()

    def _run_step(self, step: Next, first: bool) -> Step | None:
        environment, runner, c = self.environment, self.environment.runner, self.config
        executor = openmodel.executor_for(environment)
        began = time.time()
        executor.set_target(step.rate)
        if not first:
            test = self.run.test
            runner.start(1, 1)  # test_start: a new TestRun, every part reset, the oracle's start snapshot
            waited = time.time() + 10.0
            while self.run.test is test and time.time() < waited and not self._stop.is_set():
                gevent.sleep(0.01)
        if c.warmup_seconds and not self._wait(c.warmup_seconds):
            return None
        environment.stats.reset_all()
        admission = executor.admission
        dropped0, lateness0 = admission.dropped, dict(admission.lateness)
        self._process.cpu_percent(None)
        plateau_start = time.time()
        plateau = c.confirm_seconds if step.kind == "confirm" else c.plateau_seconds
        if not self._wait(plateau):
            return None
        plateau_s = time.time() - plateau_start
        answered = environment.stats.total.num_requests
        cpu = self._cpu(runner)
        executor.set_target(None)
        self._drain(executor)
        admission = executor.admission
        dropped = admission.dropped - dropped0
        late = {bucket: count - lateness0.get(bucket, 0) for bucket, count in admission.lateness.items()
                if count - lateness0.get(bucket, 0) > 0}
        started = sum(late.values())
        late_p99 = calculate_response_time_percentile(late, started, 0.99) if started else None
        if self._stop.is_set():
            return None
        runner.stop()  # test_stop: users stopped, the workers' last statistics and oracle records collected
        from ..runtime import end_of_run
        summary = end_of_run.judge(self.run, environment, self.run.test)
        figures = report.step_figures(step, summary, plateau_s=plateau_s, answered=answered, dropped=dropped,
                                      started=started, late_p99_ms=late_p99, cpu_percent=cpu, config=c,
                                      elapsed_s=time.time() - self.started_at)
        self._overhead_s = max(self._overhead_s, time.time() - began - c.warmup_seconds - plateau)
        return figures

    def _cpu(self, runner) -> float:
        """The load generator's CPU over the plateau: this process, or the busiest worker (their heartbeats)."""
        if isinstance(runner, MasterRunner):
            return float(max([client.cpu_usage for client in runner.clients.values()] or [0.0]))
        return float(self._process.cpu_percent(None))

    def _drain(self, executor) -> None:
        """Let the task runs in flight finish (bounded by the request timeout and the budget): their latency counts,
        and the next step must not start on this one's backlog. A master sees no in-flight count: it waits until
        a worker report brings no new request."""
        limit = min(time.time() + self.run.config.service.request_timeout_seconds + 1.0, self.deadline + 1.0)
        if isinstance(self.environment.runner, MasterRunner):
            seen = -1
            while time.time() < limit and not self._stop.is_set():
                count = self.environment.stats.total.num_requests
                if count == seen:
                    return
                seen = count
                self._stop.wait(min(3.2, max(0.0, limit - time.time())))
            return
        while executor.admission.in_flight > 0 and time.time() < limit and not self._stop.is_set():
            gevent.sleep(DRAIN_POLL_S)

    # The answer --------------------------------------------------------------------------------------------

    def answer(self) -> dict[str, Any]:
        elapsed = time.time() - self.started_at if self.started_at else 0.0
        return report.answer(self.search, self.steps, self.config, self.run.config.thresholds, require_rps=self.require_rps,
                             elapsed_s=elapsed, interrupted=self.interrupted, current=self.current)

    def _write(self) -> None:
        from ..runtime import end_of_run
        folder = end_of_run.results_dir(self.run, self.environment)
        try:
            report.write_files(folder, self.answer())
        except OSError as error:
            logger.error("could not write capacity.json / steps.csv: %s", error.strerror or error)

    def amend(self, summary: dict[str, Any]) -> dict[str, Any]:
        """summary.json of the last test (normally the confirmation) with the search's answer and its verdict."""
        self.stop()
        answer = self.answer()
        self._write()
        summary["capacity"] = answer
        print(f"capacity search: {answer['message']}", file=sys.stderr, flush=True)
        summary["verdict"] = answer["verdict"]
        summary["interrupted"] = summary.get("interrupted") or answer["search"]["interrupted"]
        return summary


def install(run, environment, config: CapacityConfig, require_rps: float | None) -> CapacityDriver:
    """The driver and its listeners (the first test_start begins the search; quitting stops it)."""
    driver = CapacityDriver(run, environment, config, require_rps)
    attach_listeners(environment.events, [("test_start", driver.on_test_start)])
    run.amenders.append(driver.amend)
    return driver

