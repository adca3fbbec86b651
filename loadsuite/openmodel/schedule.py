"""The arrival-rate executor's arithmetic, free of gevent and Locust so it tests on a fake clock.

`ArrivalSchedule` says when iterations are due (one every 1/rate seconds, the rate may change);
`Admission` decides whether a due iteration may start (at most `bound` in flight; the rest are dropped
and counted, like k6's dropped_iterations) and keeps the counts and the start lateness the reports show.
`plan` hands starts to slots a little ahead of time, so an idle slot sleeps until its own start (one
wake-up per iteration, as in the closed model); `claim` lets a slot that has just finished take the next near
start itself, without that hand-over. While slots claim every start, the scheduler sleeps: the slot woken for
the last start handed out sees when the next one nears unclaimed (`nudge`) and wakes it, so the scheduler
needs no timer of its own then (on this VM a wake-up of its own costs about 140 us of CPU; bench/README.md).
"""
from __future__ import annotations

from locust.stats import bucket_response_time, calculate_response_time_percentile


class ArrivalSchedule:
    """Intended start times at a rate that may change: origin + k / rate, so no drift accumulates."""

    __slots__ = ("rate", "next_due", "_origin", "_k", "_last")

    @property
    def last(self) -> float | None:
        """The last intended start handed out (None before the first)."""
        return self._last

    def __init__(self) -> None:
        self.rate: float | None = None
        self.next_due: float | None = None  # None: no rate, nothing is due
        self._origin = 0.0
        self._k = 0
        self._last: float | None = None  # the last intended start handed out

    def set_rate(self, rate: float | None, now: float) -> None:
        """Switch to `rate` iterations per second from `now` (None or <= 0: stop scheduling)."""
        if rate is not None and rate <= 0:
            rate = None
        if rate == self.rate:
            return
        self.rate = rate
        if rate is None:
            self.next_due = None
            return
        # The first iteration starts now; after a change the next one is one new interval after the last
        # one (never in the past, which would send a burst the new rate never asked for).
        start = now if self._last is None else max(self._last + 1.0 / rate, now)
        self._origin, self._k, self.next_due = start, 0, start

    def pop_due(self, now: float) -> float | None:
        """The earliest intended start at or before `now` (and advance), or None if none is due yet."""
        due = self.next_due
        if due is None or due > now:
            return None
        self._last = due
        self._k += 1
        self.next_due = self._origin + self._k / self.rate
        return due


class Admission:
    """The bound on concurrent iterations and the counts: scheduled, started, dropped, start lateness."""

    __slots__ = ("bound", "in_flight", "peak_in_flight", "dropped", "lateness")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.in_flight = 0
        self.peak_in_flight = 0
        self.dropped = 0
        self.lateness: dict[int, int] = {}  # {rounded ms (Locust's buckets, ~300 keys at most): count}

    def admit(self) -> bool:
        """One iteration is due: True if it may start, False (and counted as dropped) at the bound."""
        if self.in_flight >= self.bound:
            self.dropped += 1
            return False
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        return True

    def started(self, late_s: float) -> None:
        """An admitted iteration began `late_s` seconds after its intended start."""
        bucket = bucket_response_time(late_s * 1000.0 if late_s > 0 else 0.0)
        self.lateness[bucket] = self.lateness.get(bucket, 0) + 1

    def finished(self) -> None:
        """An admitted iteration ended (or its slot was stopped before it started)."""
        self.in_flight -= 1

    @property
    def started_count(self) -> int:
        return sum(self.lateness.values())

    @property
    def scheduled(self) -> int:
        """Iterations whose start came: started or dropped (one handed out early but not yet due is neither)."""
        return self.started_count + self.dropped

    def drain(self) -> dict:
        """The counts since the last drain (msgpack-safe), for a worker's report to the master."""
        out = {"dropped": self.dropped, "peak_in_flight": self.peak_in_flight,
               "lateness": [[bucket, count] for bucket, count in self.lateness.items()]}
        self.dropped = 0
        self.lateness = {}
        return out

    def merge(self, report) -> None:
        """Add a worker's drain(); malformed parts are ignored rather than raised."""
        if not isinstance(report, dict):
            return
        dropped = report.get("dropped")
        if type(dropped) is int and dropped >= 0:
            self.dropped += dropped
        peak = report.get("peak_in_flight")
        if type(peak) is int:
            self.peak_in_flight = max(self.peak_in_flight, peak)
        for pair in report.get("lateness") or ():
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(type(v) is int for v in pair) and pair[1] > 0:
                self.lateness[pair[0]] = self.lateness.get(pair[0], 0) + pair[1]

    def lateness_ms(self) -> dict[str, int | None]:
        """p50 / p99 / max start lateness in ms (Locust's percentile rule), None before any start."""
        count = self.started_count
        if not count:
            return {"p50": None, "p99": None, "max": None}
        return {"p50": calculate_response_time_percentile(self.lateness, count, 0.5),
                "p99": calculate_response_time_percentile(self.lateness, count, 0.99),
                "max": max(self.lateness)}


def plan(schedule: ArrivalSchedule, admission: Admission, now: float, idle: int, lookahead: float,
         margin: float = 0.0) -> tuple[list[float], list[float], float | None]:
    """The starts to hand out at `now`: (to idle slots, to new slots, when to plan again or None).

    A start within `lookahead` goes to an idle slot, else to a new slot, while fewer than `admission.bound`
    are in flight (handed out or running); the slot sleeps until its start. So the slots grow to about
    rate x (lookahead + task time) and planning every lookahead / 2 suffices. At the bound a start waits
    until it is due (plan again then) and is dropped if the bound is still reached.

    When the next start is within `margin` of the last one handed out, the slot woken for that last start
    will find the next one nearer than `margin` (`nudge`) unless a slot claimed it first: then there is no
    time to plan again (`wake_at` is None), the scheduler waits to be nudged.
    """
    to_idle: list[float] = []
    to_new: list[float] = []
    while True:
        due = schedule.next_due
        if due is None:
            return to_idle, to_new, None
        if due >= now + lookahead:  # plan again when it nears, at most every lookahead / 2
            last = schedule.last
            if last is not None and due - last < margin:
                return to_idle, to_new, None  # the slot of the last start nudges when the next one nears
            return to_idle, to_new, max(due - lookahead, now + lookahead / 2)
        if due > now and admission.in_flight >= admission.bound:
            return to_idle, to_new, due
        schedule.pop_due(due)
        if admission.admit():
            (to_idle if idle > len(to_idle) else to_new).append(due)


def claim(schedule: ArrivalSchedule, admission: Admission, now: float, lookahead: float) -> float | None:
    """A slot that just finished takes the next start itself if it is due within `lookahead` and the bound
    has room (admitted, as plan() admits), else None and the slot waits for the scheduler. Starts still go
    out in order: whoever takes one takes the earliest."""
    due = schedule.next_due
    if due is None or due >= now + lookahead or admission.in_flight >= admission.bound:
        return None
    schedule.pop_due(due)
    admission.admit()
    return due


def nudge(schedule: ArrivalSchedule, now: float, margin: float) -> bool:
    """Whether a slot woken for its start at `now` must wake the scheduler: the next start is due within
    `margin` and no slot has claimed it (plan() sleeps without a timer on this promise)."""
    due = schedule.next_due
    return due is not None and due - now < margin
