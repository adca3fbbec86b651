"""The search over offered rates, free of Locust so it tests on plain numbers: grow, bisect, confirm.

`Search.next()` says which rate to offer next (a step, or the confirmation of the rate found); `record()` takes
the step's outcome. Rates grow by `growth` from `start_rps` until a step fails (or `max_rps` passes), then the
gap between the highest passing and the lowest failing rate is halved until it is within `tolerance` of the
passing one; the highest passing rate is then offered again for `confirm_seconds`. A failed confirmation is a
failing rate like any other: the search goes on below it. A generator-limited step ends the growth: above it the
load generator, not the service, is measured ("at least X").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["pass", "fail", "generator"]
MIN_RPS = 0.5  # below this a failing start rate is not halved further: nothing was proven


@dataclass(frozen=True)
class Next:
    rate: float
    kind: Literal["step", "confirm"]


class Search:
    """Which rate comes next, from the outcomes so far (a state machine over passing and failing rates)."""

    def __init__(self, start_rps: float, growth: float, tolerance: float, max_rps: float) -> None:
        self.start, self.growth, self.tolerance, self.max_rps = start_rps, growth, tolerance, max_rps
        self.passed: list[float] = []  # rates whose step passed (not refuted by a failed confirmation)
        self.failed: list[float] = []  # rates whose step or confirmation failed
        self.confirmed: float | None = None
        self.generator_limited_at: float | None = None
        self.done_because: str | None = None

    @property
    def lo(self) -> float | None:
        below = [rate for rate in self.passed if not self.failed or rate < min(self.failed)]
        return max(below) if below else None

    @property
    def hi(self) -> float | None:
        return min(self.failed) if self.failed else None

    def next(self) -> Next | None:
        """The next rate to offer, or None when the search is over (`done_because` says why)."""
        if self.done_because is not None:
            return None
        lo, hi = self.lo, self.hi
        if self.generator_limited_at is not None or (hi is None and lo is not None and lo >= self.max_rps):
            return self._confirm_or_end(lo, "the load generator was the limit" if self.generator_limited_at
                                        else f"max_rps {self.max_rps:g} passed")
        if hi is None:
            rate = self.start if lo is None else min(lo * self.growth, self.max_rps)
            return Next(round(rate, 3), "step")
        if lo is None:  # even the lowest rate tried failed: go down
            rate = hi / self.growth
            if rate < MIN_RPS:
                self.done_because = f"every rate down to {hi:g} req/s failed"
                return None
            return Next(round(rate, 3), "step")
        if hi <= lo * (1 + self.tolerance):
            return self._confirm_or_end(lo, f"bisected to within {self.tolerance:.0%}")
        return Next(round((lo + hi) / 2, 3), "step")

    def _confirm_or_end(self, lo: float | None, why: str) -> Next | None:
        if lo is None:
            self.done_because = why + ": no rate passed"
            return None
        if self.confirmed == lo:
            self.done_because = why + f"; {lo:g} req/s confirmed"
            return None
        return Next(lo, "confirm")

    def record(self, step: Next, outcome: Outcome) -> None:
        if outcome == "generator":
            self.generator_limited_at = step.rate if self.generator_limited_at is None else \
                min(self.generator_limited_at, step.rate)
            if step.kind == "confirm":  # the proof itself outran the generator: nothing is confirmed
                self.passed.remove(step.rate)
                self.done_because = f"the load generator was the limit at {step.rate:g} req/s"
            return
        if outcome == "pass":
            if step.kind == "confirm":
                self.confirmed = step.rate
            else:
                self.passed.append(step.rate)
            return
        self.failed.append(step.rate)
        if step.kind == "confirm":
            self.passed = [rate for rate in self.passed if rate < step.rate]

    def stop(self, why: str) -> None:
        """Ended from outside (the budget, an interrupt): what is proven stays."""
        if self.done_because is None:
            self.done_because = why
