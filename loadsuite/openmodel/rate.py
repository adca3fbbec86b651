"""The open model's target rate: where it comes from, its split across workers, and the rate achieved.

The target is the active stage's `target_rps` (staged shape) or `load_shape.target_rps` overall; the master
(or the single local process) samples it once a second. A master sends each worker an equal share of the
rate and of `load_shape.max_in_flight`; the executor (executor.py) of each load-generator process then
schedules its share. `RateReport` compares the time-weighted target with the requests Locust counted over
the same seconds, summed over all workers on the master.

Requests are attributed to the second in which they were logged (Locust's per-second counters, which a
worker's report carries with its own timestamps), not to the moment the master received them: workers report
every 3 s and last at the end, so counting arrivals would put a worker's last seconds outside the run.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from locust.runners import MasterRunner

from ..config import LoadShapeConfig
from ..shapes.locust_shapes import ProfileShape

if TYPE_CHECKING:
    from locust.env import Environment

RATE_MESSAGE = "open_model_rate"  # master -> workers: {"target_rps": share or None, "max_in_flight": share}
SAMPLE_SECONDS = 1.0
SETTLE_SECONDS = 10.0  # a second this old is complete on the master (workers report every 3 s); Locust's
                       # per-second counters are trimmed at 60 s (runtime.run._trim_per_second_counters)


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
            return text + " (below target: see the dropped iterations and the generator's CPU)"
        if self.ratio > 1 / self.tolerance:
            return text + " (above target: some task runs send more than one request)"
        return text

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 4), "met": self.met, "message": self.message()}


class TargetRate:
    """The total target over time, as the master or local runner sees it, and the achieved rate."""

    def __init__(self, target_rps: float | None, max_in_flight: int, *, tolerance: float = 0.9,
                 clock: Callable[[], float] = time.time):
        self.overall_target_rps = target_rps
        self.max_in_flight = max_in_flight
        self.tolerance = tolerance
        self._clock = clock  # wall clock: Locust's per-second counters are keyed by int(time.time())
        self.reset()

    @classmethod
    def from_config(cls, config: LoadShapeConfig) -> TargetRate | None:
        """A TargetRate when load_shape.target_rps or any staged stage's target_rps is set, else None."""
        if config.target_rps is None and not any(stage.target_rps for stage in config.staged.stages):
            return None
        return cls(config.target_rps, config.max_in_flight)

    def reset(self) -> None:
        self._seconds = 0.0
        self._target_integral = 0.0
        self._spans: list[list[float]] = []  # [start, end) wall-clock spans with a target, not yet settled
        self._requests = 0  # requests logged in settled seconds that a target span touches
        self._settled_to: int | None = None  # seconds before this one are counted in _requests
        self._last_sample: float | None = None
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

    def sample(self, environment: Environment, final: bool = False) -> float | None:
        """Account the interval since the last sample, tell workers their share; returns the target now.

        The final sample (the test is stopping) ends the last span; report() then counts every second left.
        """
        now = self._clock()
        if self._last_sample is not None and self._last_target is not None:
            elapsed = now - self._last_sample
            self._seconds += elapsed
            self._target_integral += self._last_target * elapsed
            if self._spans and self._spans[-1][1] == self._last_sample:
                self._spans[-1][1] = now
            else:
                self._spans.append([self._last_sample, now])
        self._settle(environment, int(now - SETTLE_SECONDS))
        if final:
            self._last_sample, self._last_target = now, None
            return None
        runner = environment.runner
        target = self.target_rps(environment)
        if isinstance(runner, MasterRunner):
            self.send_shares(runner, target)
        self._last_sample, self._last_target = now, target
        return target

    def _counted(self, environment: Environment, before: int | None) -> int:
        """Requests logged in seconds from _settled_to up to `before` (None: all) that a target span touches."""
        if not self._spans:
            return 0
        first = int(self._spans[0][0]) if self._settled_to is None else self._settled_to
        per_second = environment.stats.total.num_reqs_per_sec
        total = 0
        for second, count in list(per_second.items()):
            if second < first or (before is not None and second >= before):
                continue
            if any(start < second + 1 and second < end for start, end in self._spans):
                total += count
        return total

    def _settle(self, environment: Environment, before: int) -> None:
        if self._settled_to is not None and before <= self._settled_to:
            return
        self._requests += self._counted(environment, before)
        self._settled_to = before
        self._spans = [span for span in self._spans if span[1] > before]

    def send_shares(self, runner: MasterRunner, target: float | None) -> None:
        """Each connected worker gets an equal share of the rate and of the bound (every worker gets
        Locust's spawn message, users or not, so every worker runs an executor)."""
        workers = len(runner.clients.ready) + len(runner.clients.spawning) + len(runner.clients.running)
        share = target / workers if target is not None and workers > 0 else None
        bound = math.ceil(self.max_in_flight / workers) if workers > 0 else self.max_in_flight
        runner.send_message(RATE_MESSAGE, {"target_rps": share, "max_in_flight": bound})

    def report(self, environment: Environment | None = None) -> RateReport | None:
        """Target versus achieved rate so far; None if no target was active for a whole sample interval.

        Requests count in the second they were logged, wherever a target span touches it; the seconds not yet
        settled are read now, so a worker's last report (it arrives after test_stop) is counted.
        """
        if self._seconds <= 0:
            return None
        requests = self._requests
        if environment is not None:
            requests += self._counted(environment, None)
        return RateReport(target_rps=self._target_integral / self._seconds, achieved_rps=requests / self._seconds,
                          seconds=round(self._seconds, 3), requests=requests, tolerance=self.tolerance)
