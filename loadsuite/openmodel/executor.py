"""The arrival-rate executor: each task run starts at its scheduled time whether or not earlier ones finished.

One scheduler greenlet per load-generator process hands intended start times (schedule.py) to slots: a slot
is a user instance of the run's user classes whose greenlet runs one task of its configured mix per start
it is handed (the same tasks, validators and request names as the closed model). Locust's own users become
slots when they start (`ShopUser.run` calls `serve`); when every slot is busy the executor adds users of its
own, weighted like Locust's, up to `load_shape.max_in_flight` iterations in flight. An iteration due at the
bound is dropped and counted (k6's dropped_iterations), never silently skipped.

Every request of a task run is reported to Locust with the run's start lateness (actual start - intended
start) added to its response time and taken off its start time, through the user's client's request
event: Locust's statistics (console, HTML, CSVs, thresholds, web UI) then measure from the intended start
without any correction afterwards. Lateness is the generator's own delay (a busy CPU or event loop); the
bound never delays a run, it drops it. `install` returns the (event, listener) pairs for event_hooks.
"""
from __future__ import annotations

import logging
import random
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

import gevent
from gevent import GreenletExit
from gevent.event import Event
from gevent.pool import Group
from gevent.queue import Queue
from locust.exception import RescheduleTask, RescheduleTaskImmediately, StopTest, StopUser
from locust.runners import MasterRunner, WorkerRunner
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING, DefaultTaskSet

from ..config import LoadShapeConfig
from .rate import RATE_MESSAGE, SAMPLE_SECONDS, TargetRate
from .schedule import Admission, ArrivalSchedule, claim, nudge, plan

logger = logging.getLogger(__name__)

LOOKAHEAD_SECONDS = 0.2  # starts are handed to slots this far ahead (they sleep until them)
NUDGE_SECONDS = 0.05  # a slot woken for its start wakes the scheduler when the next start is this near unclaimed
REPORT_KEY = "open_model"  # worker -> master: Admission.drain() in every stats report

_executors: "weakref.WeakKeyDictionary[Any, ArrivalRateExecutor]" = weakref.WeakKeyDictionary()


class LateRequestEvent:
    """Stands in for a client's request event: adds its task run's start lateness to each request."""

    __slots__ = ("_hook", "late_s")

    def __init__(self, hook) -> None:
        self._hook = hook
        self.late_s = 0.0

    def fire(self, **kwargs) -> None:
        late = self.late_s
        response_time = kwargs.get("response_time")
        if response_time is not None:
            kwargs["response_time"] = response_time + late * 1000.0
        start_time = kwargs.get("start_time")
        if start_time is not None:
            kwargs["start_time"] = start_time - late
        self._hook.fire(**kwargs)

    def __getattr__(self, name: str):
        return getattr(self._hook, name)


class ArrivalRateExecutor:
    """This process's part of the open model: scheduling (local, worker), shares (master), counts (all)."""

    def __init__(self, environment, rate: TargetRate, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.environment = environment
        self.rate = rate  # the total target: sampled on the master or local runner
        self._clock = clock
        self.admission = Admission(rate.max_in_flight)
        self.schedule = ArrivalSchedule()
        self._share: tuple[float | None, int] | None = None  # on a worker: (rate, bound) from the master
        self._queue: Queue = Queue()  # intended starts handed to idle slots (never more than are waiting)
        self._idle = 0  # slots waiting for a start minus starts queued for them
        self._extras = Group()
        self._scheduler: gevent.Greenlet | None = None
        self._wake = Event()  # set: the scheduler plans now (a slot's nudge, a new rate)
        self._sampler: gevent.Greenlet | None = None
        self._warned = False

    # Roles -------------------------------------------------------------------------------------------

    @property
    def schedules(self) -> bool:
        return not isinstance(self.environment.runner, MasterRunner)

    def listeners(self) -> list[tuple[str, Callable]]:
        runner = self.environment.runner
        pairs: list[tuple[str, Callable]] = [("test_start", self._on_test_start),
                                             ("test_stopping", self._on_test_stopping),
                                             ("test_stop", self._on_test_stop)]
        if isinstance(runner, WorkerRunner):
            runner.register_message(RATE_MESSAGE, self._on_rate_message)
            pairs.append(("report_to_master", lambda client_id, data, **_kw: data.__setitem__(
                REPORT_KEY, self.admission.drain())))
        else:
            if isinstance(runner, MasterRunner):
                pairs.append(("worker_report", lambda client_id, data, **_kw: self.admission.merge(
                    data.get(REPORT_KEY))))
            pairs.append(("quitting", lambda environment, **_kw: print(self.console_text(), flush=True)))
        return pairs

    # Run lifecycle -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """A new test: the achieved rate, the admission counts and the schedule start over (SuiteRun resets
        every part when a test starts)."""
        self.rate.reset()
        self.admission = Admission(self.admission.bound)
        self._warned = False
        self.schedule = ArrivalSchedule()

    def _on_test_start(self, environment, **_kwargs) -> None:
        if self.schedules:
            for cls in environment.user_classes:  # as Locust's runner does before it spawns (a worker's host
                if environment.host:               # comes from the master), for the users made here too
                    cls.host = environment.host
            if self._scheduler is None or self._scheduler.dead:
                self._scheduler = gevent.spawn(self._run_schedule)
        if not isinstance(environment.runner, WorkerRunner) and (self._sampler is None or self._sampler.dead):
            self._sampler = gevent.spawn(self._sample_forever)
        if isinstance(environment.runner, WorkerRunner) and self._share is not None:
            self._apply(*self._share)

    def _on_test_stopping(self, environment, **_kwargs) -> None:
        """No new iterations once the test is stopping; those in flight finish as Locust's users do. The
        target's last span ends here: the load stops now, whatever the end of the run then waits for."""
        if self._scheduler is not None:
            self._scheduler.kill(block=False)
            self._scheduler = None
        self.schedule.set_rate(None, self._clock())
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self._sampler = None
            self.rate.sample(environment, final=True)

    def _on_test_stop(self, environment, **_kwargs) -> None:
        self._on_test_stopping(environment)
        self._extras.kill(block=False)

    def _sample_forever(self) -> None:
        while True:
            target = self.rate.sample(self.environment)
            if self.schedules:
                self._apply(target, self.rate.max_in_flight)
            gevent.sleep(SAMPLE_SECONDS)

    def _on_rate_message(self, environment, msg, **_kwargs) -> None:
        data = msg.data or {}
        bound = data.get("max_in_flight")
        self._share = (data.get("target_rps"), bound if type(bound) is int and bound > 0 else self.admission.bound)
        if self._scheduler is not None:
            self._apply(*self._share)

    def set_target(self, rate: float | None) -> None:
        """Hold `rate` (None: start nothing more) from now, not from the next sample: the capacity finder's steps
        change the rate between and within tests (the first sample of a new test reads it too)."""
        self.rate.overall_target_rps = rate
        if self._sampler is None:  # no test running: its test_start samples the new target
            return
        target = self.rate.sample(self.environment)  # accounts the interval so far; a master tells its workers now
        if self.schedules:
            self._apply(target, self.rate.max_in_flight)

    def _apply(self, rate: float | None, bound: int) -> None:
        if bound != self.admission.bound or rate != self.schedule.rate:
            self.admission.bound = bound
            self.schedule.set_rate(rate, self._clock())
            self._wake.set()

    # The scheduler and the slots ---------------------------------------------------------------------

    def _run_schedule(self) -> None:
        """Plan (schedule.plan), hand the starts to slots, sleep until the next plan or a nudge (a slot's, or
        a new rate's; at most a second). Starts are handed out up to LOOKAHEAD_SECONDS early and a slot sleeps
        until its own start, so the scheduler never wakes per start (a wake-up and a hand-over per start cost
        16 % more CPU per request than the closed model here); while the slots claim every start it sleeps
        until nudged (bench/README.md, "The open model")."""
        clock, queue, wake = self._clock, self._queue, self._wake
        while True:
            wake.clear()
            now = clock()
            to_idle, to_new, wake_at = plan(self.schedule, self.admission, now, self._idle, LOOKAHEAD_SECONDS,
                                            NUDGE_SECONDS)
            for intended in to_idle:
                self._idle -= 1
                queue.put(intended)
            for intended in to_new:
                self._extras.spawn(self.serve, self._new_user(), intended)
            if self.admission.dropped and not self._warned:
                self._warned = True
                logger.warning("open model: %d task runs in flight (load_shape.max_in_flight): "
                               "iterations due now are dropped and counted", self.admission.bound)
            wake.wait(SAMPLE_SECONDS if wake_at is None else min(SAMPLE_SECONDS, max(0.0, wake_at - clock())))

    def _claim(self) -> float | None:
        """A slot that just finished takes the next near start itself (schedule.claim): no hand-over through the
        scheduler and the queue, one wake-up fewer per iteration (bench/README.md, "The open model")."""
        if self._scheduler is None:
            return None
        return claim(self.schedule, self.admission, self._clock(), LOOKAHEAD_SECONDS)

    def _new_user(self):
        """A user for one more slot: of the classes Locust runs in this process, in their proportions (a
        process without users of its own: the run's classes that have tasks, by weight, not the on-demand ones)."""
        runner = self.environment.runner
        running = {name: count for name, count in (getattr(runner, "user_classes_count", None) or {}).items() if count}
        by_name = {cls.__name__: cls for cls in self.environment.user_classes}
        if running:
            classes = [by_name[name] for name in running if name in by_name]
            weights = [running[cls.__name__] for cls in classes]
        else:
            classes = [cls for cls in by_name.values() if cls.tasks and not getattr(cls, "on_demand", False)]
            weights = [max(getattr(cls, "weight", 1), 1) for cls in classes]
        return random.choices(classes, weights)[0](self.environment)

    def serve(self, user, first: float | None = None) -> None:
        """Run `user` as a slot: one task of its mix per start handed to it (`first`: its first start),
        with Locust's TaskSet.run rules for errors and stopping."""
        client = getattr(user, "client", None)
        hook = getattr(client, "request_event", None)
        late = LateRequestEvent(hook)
        if hook is not None:  # both Locust clients fire every request (catch_response too) through it
            client.request_event = late
        environment, queue, clock = self.environment, self._queue, self._clock
        user._state = LOCUST_STATE_RUNNING
        user._taskset_instance = DefaultTaskSet(user)  # as Locust's User.run does; on_start may replace it
        try:
            try:
                user.on_start()
            except Exception as error:
                logger.error("%s\n%s", error, traceback.format_exc())
                if not isinstance(error, (StopUser, StopTest)):
                    environment.events.user_error.fire(user_instance=user, exception=error, tb=error.__traceback__)
                raise
            taskset = user._taskset_instance
            while True:
                if user._state == LOCUST_STATE_STOPPING:
                    raise StopUser()
                user._state = LOCUST_STATE_WAITING
                intended, first = first, None
                if intended is None:
                    intended = self._claim()
                if intended is None:
                    self._idle += 1
                    try:
                        intended = queue.get()
                    except BaseException:
                        self._idle -= 1
                        raise
                admission = self.admission
                try:
                    delay = intended - clock()
                    if delay > 0:
                        gevent.sleep(delay)
                except BaseException:  # stopped before its start: never started, never silently lost
                    admission.finished()
                    if self._scheduler is not None:
                        admission.dropped += 1
                    raise
                if self._scheduler is None:  # the test is stopping: a start handed out early is not begun
                    admission.finished()
                    raise StopUser()
                user._state = LOCUST_STATE_RUNNING
                now = clock()
                if nudge(self.schedule, now, NUDGE_SECONDS):  # the next start nears and no slot claimed it
                    self._wake.set()
                late.late_s = late_s = max(0.0, now - intended)  # a timer may fire a little early
                admission.started(late_s)
                try:
                    taskset.execute_task(taskset.get_next_task())
                except (RescheduleTask, RescheduleTaskImmediately):
                    pass
                except (StopUser, StopTest, GreenletExit):
                    raise
                except Exception as error:
                    environment.events.user_error.fire(user_instance=user, exception=error, tb=error.__traceback__)
                    if not environment.catch_exceptions:
                        raise
                    logger.error("%s\n%s", error, traceback.format_exc())
                finally:
                    admission.finished()
        except (GreenletExit, StopUser, StopTest):
            user.on_stop()

    # Reports -----------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any] | None:
        """summary.json's "open_model": target vs achieved, scheduled/started/dropped, start lateness."""
        report = self.rate.report(self.environment)
        admission = self.admission
        out: dict[str, Any] = report.as_dict() if report is not None else {"message": "no target was active"}
        out.update({"max_in_flight": self.rate.max_in_flight, "scheduled": admission.scheduled,
                    "started": admission.started_count, "dropped": admission.dropped,
                    "peak_in_flight": admission.peak_in_flight, "lateness_ms": admission.lateness_ms()})
        if admission.dropped:
            out["met"] = False
            out["message"] = (out.get("message", "") + f"; {admission.dropped} iterations dropped at "
                              f"max_in_flight {self.rate.max_in_flight}").lstrip("; ")
        return out

    def console_text(self) -> str:
        s = self.summary()
        late = s["lateness_ms"]
        return "\n".join([
            "", "=== Open model (arrival rate) " + "=" * 42,
            f"{s.get('message', '')}",
            f"iterations scheduled {s['scheduled']:,}, started {s['started']:,}, dropped {s['dropped']:,} "
            f"(max_in_flight {s['max_in_flight']:,}, peak in flight {s['peak_in_flight']:,})",
            "start lateness ms (included in every response time): "
            f"p50 {_ms(late['p50'])}, p99 {_ms(late['p99'])}, max {_ms(late['max'])}"])


def _ms(value) -> str:
    return "-" if value is None else f"{value:,}"


def install(environment, config: LoadShapeConfig) -> list[tuple[str, Callable]]:
    """Make this process's executor when an open model is configured; returns its (event, listener) pairs."""
    rate = TargetRate.from_config(config)
    if rate is None:
        return []
    if environment.runner is None:
        raise RuntimeError("openmodel.install needs environment.runner: call it from the init event")
    executor = ArrivalRateExecutor(environment, rate)
    _executors[environment] = executor
    return executor.listeners()


def reset(environment) -> None:
    """This environment's executor starts a new test (none without an open model)."""
    executor = _executors.get(environment)
    if executor is not None:
        executor.reset()


def executor_for(environment) -> ArrivalRateExecutor | None:
    """The executor that drives this environment's users, or None (closed model)."""
    return _executors.get(environment)


def summary(environment) -> dict[str, Any] | None:
    """summary.json's "open_model" (None without an open model)."""
    executor = _executors.get(environment)
    return executor.summary() if executor is not None else None
