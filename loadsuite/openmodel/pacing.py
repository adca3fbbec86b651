"""Open-model pacing: hold a target total request rate by pacing every user at target / users.

The target is the active stage's `target_rps` (staged shape) or `load_shape.target_rps` overall. Each
user paces its task runs like Locust's `constant_throughput` (task run time counts toward the interval),
so this is a closed model underneath: a user whose request takes longer than its interval falls behind
and the achieved rate drops below the target. `OpenModel.report()` / `achieved_vs_target()` say by how much.

Coordinated-omission hook: before each sleep the wait_time sets `user._intended_start` (time.time()
seconds, the clock of Locust's request `start_time`) to when the next task run should start by the fixed
schedule (previous intended start + interval), even when the user is late. Nothing corrects latency yet.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import gevent
from locust import between
from locust.runners import MasterRunner, WorkerRunner

from ..config import LoadShapeConfig, WaitTimeConfig
from ..shapes.locust_shapes import ProfileShape

if TYPE_CHECKING:
    from locust import User
    from locust.env import Environment

RATE_MESSAGE = "open_model_rate"  # master -> workers: {"target_rps": this worker's share, or None}
SAMPLE_SECONDS = 1.0

_attached: "weakref.WeakKeyDictionary[Environment, OpenModel]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class RateReport:
    """Target versus achieved request rate over the seconds in which a target was active."""

    target_rps: float
    achieved_rps: float
    seconds: float
    requests: int
    tolerance: float

    @property
    def ratio(self) -> float:
        return self.achieved_rps / self.target_rps

    @property
    def met(self) -> bool:
        return self.ratio >= self.tolerance

    def message(self) -> str:
        text = f"target {self.target_rps:.0f} rps, achieved {self.achieved_rps:.0f} rps"
        if not self.met:
            return text + " (service too slow for the open model)"
        if self.ratio > 1 / self.tolerance:
            return text + " (above target: some task runs send more than one request)"
        return text

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 4), "met": self.met, "message": self.message()}


class OpenModel:
    """Per-process open-model state: where the target comes from, the pacing, and the achieved rate."""

    def __init__(self, target_rps: float | None = None, *, tolerance: float = 0.9,
                 clock: Callable[[], float] = time.perf_counter, wall_clock: Callable[[], float] = time.time):
        self.overall_target_rps = target_rps
        self.tolerance = tolerance
        self._clock = clock
        self._wall_clock = wall_clock
        self._worker_share_rps: float | None = None  # on a worker: its share of the target, from the master
        self._sampler: gevent.Greenlet | None = None
        self._reset()

    @classmethod
    def from_config(cls, config: LoadShapeConfig) -> OpenModel | None:
        """An OpenModel when load_shape.target_rps or any staged stage's target_rps is set, else None."""
        if config.target_rps is None and not any(stage.target_rps for stage in config.staged.stages):
            return None
        return cls(config.target_rps)

    def _reset(self) -> None:
        self._seconds = 0.0
        self._target_integral = 0.0
        self._requests = 0
        self._last_sample: float | None = None
        self._last_requests = 0
        self._last_target: float | None = None

    def target_rps(self, environment: Environment) -> float | None:
        """The total rate to hold now: the running stage's target_rps, else the overall one."""
        shape = environment.shape_class
        if isinstance(shape, ProfileShape):
            stage = shape.current_stage()
            if stage is None or stage.users == 0:
                return None
            if stage.target_rps is not None:
                return stage.target_rps
        return self.overall_target_rps

    def per_user_rps(self, environment: Environment) -> float | None:
        """target / running users (None: no target now); a worker divides the share the master sent it."""
        runner = environment.runner
        if runner is None:
            return None
        target = self._worker_share_rps if isinstance(runner, WorkerRunner) else self.target_rps(environment)
        users = runner.user_count
        return target / users if target is not None and users > 0 else None

    def wait_time(self, fallback: Callable[[User], float]) -> Callable[[User], float]:
        """A User.wait_time that paces to the open-model rate, or uses `fallback` while no target applies."""
        def wait_time_func(user: User) -> float:
            return self.pace(user, self.per_user_rps(user.environment), fallback)
        return wait_time_func

    def pace(self, user: User, per_user_rps: float | None, fallback: Callable[[User], float]) -> float:
        """Seconds to sleep so this user's task runs start every 1/per_user_rps seconds (constant_pacing rule)."""
        now, wall = self._clock(), self._wall_clock()
        last_run = getattr(user, "_om_last_run", None)
        if last_run is None:  # first call: the task ran since the user started (Locust stamps _cp_last_run)
            last_run = getattr(user, "_cp_last_run", now)
        run_time = now - last_run - getattr(user, "_om_last_wait", 0.0)
        if per_user_rps is None or per_user_rps <= 0:
            wait = fallback(user)
            user._intended_start = wall + wait
            user._om_on_schedule = False
        else:
            interval = 1.0 / per_user_rps
            wait = max(0.0, interval - run_time)
            on_schedule = getattr(user, "_om_on_schedule", False)
            user._intended_start = user._intended_start + interval if on_schedule else wall + wait
            user._om_on_schedule = True
        user._om_last_run = now
        user._om_last_wait = wait
        return wait

    def attach(self, environment: Environment) -> None:
        """Wire into a runner (call from the init event): sampling on master/local, rate messages on workers."""
        if environment.runner is None:
            raise RuntimeError("OpenModel.attach needs environment.runner: call it from the init event")
        _attached[environment] = self
        if isinstance(environment.runner, WorkerRunner):
            environment.runner.register_message(RATE_MESSAGE, self._on_rate_message)

    def listeners(self, environment: Environment) -> list[tuple[str, Callable]]:
        """(event name, listener) pairs for event_hooks.register: sampling runs on the master or local runner."""
        if isinstance(environment.runner, WorkerRunner):
            return []
        return [("test_start", self._on_test_start), ("test_stop", self._on_test_stop)]

    def _on_rate_message(self, environment: Environment, msg, **_kwargs) -> None:
        self._worker_share_rps = (msg.data or {}).get("target_rps")

    def _on_test_start(self, environment: Environment, **_kwargs) -> None:
        self._reset()
        if self._sampler is None or self._sampler.dead:
            self._sampler = gevent.spawn(self._sample_forever, environment)

    def _on_test_stop(self, environment: Environment, **_kwargs) -> None:
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self._sampler = None
        self.sample(environment, final=True)

    def _sample_forever(self, environment: Environment) -> None:
        while True:
            self.sample(environment)
            gevent.sleep(SAMPLE_SECONDS)

    def sample(self, environment: Environment, final: bool = False) -> None:
        """Account the interval since the last sample, then tell workers their share of the target.

        The final sample keeps the last target so report() can still count workers' late reports.
        """
        now = self._clock()
        requests = environment.stats.total.num_requests
        if self._last_sample is not None and self._last_target is not None:
            elapsed = now - self._last_sample
            self._seconds += elapsed
            self._target_integral += self._last_target * elapsed
            self._requests += max(0, requests - self._last_requests)
        if final:
            self._last_sample, self._last_requests = now, requests
            return
        runner = environment.runner
        # The target count is set before a ramp starts; the reported count lags behind it on a master.
        users = max(runner.user_count, getattr(runner, "target_user_count", 0) or 0) if runner is not None else 0
        target = self.target_rps(environment) if users > 0 else None
        if isinstance(runner, MasterRunner):
            self._send_shares(runner, target, users)
        self._last_sample, self._last_requests, self._last_target = now, requests, target

    @staticmethod
    def _send_shares(runner: MasterRunner, target: float | None, users: int) -> None:
        # Locust deals users round-robin, so min(users, workers) workers run users; each holds an equal
        # share with its own live user count, which needs no user counts from the master (they lag).
        workers = len(runner.clients.ready) + len(runner.clients.spawning) + len(runner.clients.running)
        busy = min(workers, users)
        share = target / busy if target is not None and busy > 0 else None
        runner.send_message(RATE_MESSAGE, {"target_rps": share})

    def report(self, environment: Environment | None = None) -> RateReport | None:
        """Target versus achieved rate so far; None if no target was active for a whole sample interval.

        Requests reported after the last sample (workers report every few seconds) are added when the
        run ended with a target active, so late worker reports are not lost.
        """
        if self._seconds <= 0:
            return None
        requests = self._requests
        if environment is not None and self._last_target is not None:
            requests += max(0, environment.stats.total.num_requests - self._last_requests)
        return RateReport(target_rps=self._target_integral / self._seconds, achieved_rps=requests / self._seconds,
                          seconds=round(self._seconds, 3), requests=requests, tolerance=self.tolerance)


_process_model: OpenModel | None = None  # one per load-generator process, made by paced_wait_time


def paced_wait_time(config: LoadShapeConfig, fallback: Callable[[User], float] | None = None
                    ) -> Callable[[User], float] | None:
    """The open-model wait_time for this process, or None when no target_rps is configured (closed model).

    `fallback` is the think time used while no target applies (e.g. a stage without target_rps);
    by default the built-in wait_time range. Call `attach(environment)` from the init event as well.
    """
    global _process_model
    if _process_model is None:
        _process_model = OpenModel.from_config(config)
    if _process_model is None:
        return None
    if fallback is None:
        defaults = WaitTimeConfig()
        fallback = between(defaults.min_seconds, defaults.max_seconds)
    return _process_model.wait_time(fallback)


def attach(environment: Environment) -> list[tuple[str, Callable]]:
    """Wire this process's open model (if paced_wait_time made one) into the runner; call from init.

    Returns its (event name, listener) pairs for event_hooks.register (none without an open model)."""
    if _process_model is None:
        return []
    _process_model.attach(environment)
    return _process_model.listeners(environment)


def open_model_active(environment: Environment) -> bool:
    """True when an open model (load_shape.target_rps or a stage's target_rps) paces this runner's users."""
    return _attached.get(environment) is not None


def achieved_vs_target(environment: Environment) -> dict | None:
    """The attached OpenModel's report as a dict for summary.json, or None without an open model."""
    model = _attached.get(environment)
    report = model.report(environment) if model is not None else None
    return report.as_dict() if report is not None else None
