"""Coordinated-omission correction: each request's latency measured from its intended start in the open-model schedule.

Under constant-throughput pacing (pacing.py) a user that falls behind sends its next request late and
Locust measures from that late send: a one-second stall shows as a few slow requests, while the
requests that should have been sent during the stall are simply missing (coordinated omission).
pacing.py stamps `user._intended_start` (time.time() seconds) before each wait: when the next task run
should start by the fixed schedule. wrk2 measures every request from that intended start, and its
sender catches up after a stall; pacing's users do not (constant pacing keeps a late user late), so
measuring from their actual sends would blame every later request for the old stall. This module
therefore replays each user's schedule with a sender that catches up: a task run starts at its
intended start, or when the user's previous run would have ended if later, and lasts as long as it
did (a Lindley recursion over the measured response times). Every request of the run gets that
start's lateness added to its own latency: what wrk2 would report with one connection per user. The
generator's own lateness (a saturated CPU) is not added: pacing's achieved-versus-target report
covers that. Results go per request name into a histogram keyed like Locust's response_times
(bounded: about 300 keys per name, at most MAX_NAMES names), workers' histograms merge on the
master, and p50/p95/p99 use Locust's own percentile rule so the two sets of numbers compare directly.

`install(environment)` (event_hooks calls it from init, after pacing.attach) registers listeners only
when an open model is active; `summary(environment)` gives summary.json its "corrected_latency"
(None without an open model).
"""
from __future__ import annotations

import weakref
from typing import Any

from gevent import getcurrent
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import bucket_response_time, calculate_response_time_percentile

from . import pacing

MAX_NAMES = 1000
OTHER = "(other)"
TOTAL = "Aggregated"
REPORT_KEY = "corrected_latency"
PERCENTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))

_installed: "weakref.WeakKeyDictionary[Any, CorrectedLatency]" = weakref.WeakKeyDictionary()


class CorrectedLatency:
    """Per request name: a histogram {rounded ms: count} of latency measured from the intended start."""

    __slots__ = ("max_names", "_histograms", "_counts")

    def __init__(self, max_names: int = MAX_NAMES) -> None:
        self.max_names = max_names
        self.reset()

    def reset(self) -> None:
        self._histograms: dict[str, dict[int, int]] = {}
        self._counts: dict[str, int] = {}

    def record(self, user: Any, name: str, start_time: float | None, response_time: float | None) -> None:
        """Add one request sent at start_time (time.time() s) that took response_time ms, by `user`."""
        if response_time is None:
            return
        intended = getattr(user, "_intended_start", None)
        if intended is not None and start_time is not None:
            state = user.__dict__
            if state.get("_co_intended") != intended:  # the first request of a new task run
                previous_end = state.get("_co_end", intended)  # when the replayed previous run ended
                replayed_start = previous_end if previous_end > intended else intended
                state["_co_intended"] = intended
                state["_co_shift"] = replayed_start - start_time
                state["_co_late_ms"] = (replayed_start - intended) * 1000.0
            state["_co_end"] = start_time + state["_co_shift"] + response_time / 1000.0
            response_time += state["_co_late_ms"]
        histogram = self._histograms.get(name)
        if histogram is None:
            if len(self._histograms) >= self.max_names - 1:
                name = OTHER
            histogram = self._histograms.setdefault(name, {})
        bucket = bucket_response_time(response_time)
        histogram[bucket] = histogram.get(bucket, 0) + 1
        self._counts[name] = self._counts.get(name, 0) + 1

    def on_request(self, name: str, response_time: float | None, start_time: float | None = None, **_kwargs) -> None:
        """Locust `request` listener: the user is the greenlet's first argument (Locust's documented contract)."""
        args = getattr(getcurrent(), "args", None)
        self.record(args[0] if args else None, name, start_time, response_time)

    def drain(self) -> dict[str, list[list[int]]]:
        """The histograms as {name: [[bucket, count], ...]} (msgpack-safe); this process starts empty again."""
        payload = {name: [[bucket, count] for bucket, count in histogram.items()]
                   for name, histogram in self._histograms.items()}
        self.reset()
        return payload

    def merge(self, payload: Any) -> None:
        """Add another process's drain(); malformed parts are ignored rather than raised."""
        if not isinstance(payload, dict):
            return
        for name, pairs in payload.items():
            if not isinstance(pairs, (list, tuple)):
                continue
            name = str(name)
            if name not in self._histograms and len(self._histograms) >= self.max_names - 1:
                name = OTHER
            histogram = self._histograms.setdefault(name, {})
            for pair in pairs:
                if (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(type(v) is int for v in pair)
                        and pair[1] > 0):
                    histogram[pair[0]] = histogram.get(pair[0], 0) + pair[1]
                    self._counts[name] = self._counts.get(name, 0) + pair[1]

    def summary(self) -> dict[str, dict[str, float | int]]:
        """{request name: {p50_ms, p95_ms, p99_ms, count}}, plus "Aggregated" over all names."""
        out = {}
        total: dict[int, int] = {}
        for name in sorted(self._histograms):
            histogram = self._histograms[name]
            out[name] = _percentiles(histogram, self._counts.get(name, 0))
            for bucket, count in histogram.items():
                total[bucket] = total.get(bucket, 0) + count
        if out:
            out[TOTAL] = _percentiles(total, sum(total.values()))
        return out


def _percentiles(histogram: dict[int, int], count: int) -> dict[str, float | int]:
    row: dict[str, float | int] = {key: calculate_response_time_percentile(histogram, count, q) if count else None
                                   for key, q in PERCENTILES}
    row["count"] = count
    return row


def open_model_active(environment) -> bool:
    """True when pacing attached an open model (load_shape.target_rps or a stage's target_rps) to this runner."""
    return pacing.open_model_active(environment)


def install(environment) -> list[tuple[str, Any]]:
    """Set up correction when an open model is active; returns (event name, listener) pairs for
    event_hooks.register (none without an open model)."""
    if not open_model_active(environment):
        return []
    recorder = CorrectedLatency()
    _installed[environment] = recorder
    runner = environment.runner
    pairs: list[tuple[str, Any]] = [("test_start", lambda **_kw: recorder.reset())]
    if not isinstance(runner, MasterRunner):
        pairs.append(("request", recorder.on_request))
    if isinstance(runner, WorkerRunner):
        pairs.append(("report_to_master",
                      lambda client_id, data, **_kw: data.__setitem__(REPORT_KEY, recorder.drain())))
    elif isinstance(runner, MasterRunner):
        pairs.append(("worker_report", lambda client_id, data, **_kw: recorder.merge(data.get(REPORT_KEY))))
    if not isinstance(runner, WorkerRunner):
        pairs.append(("quitting", lambda environment, **_kw: print(table(environment), flush=True)))
    return pairs


def summary(environment) -> dict[str, dict[str, float | int]] | None:
    """summary.json's "corrected_latency": per request name p50/p95/p99/count, or None without an open model."""
    recorder = _installed.get(environment)
    return recorder.summary() if recorder is not None else None


def table(environment) -> str:
    """Locust's p50/p95/p99 beside the corrected ones, per request name (printed at the end of a paced run)."""
    corrected = summary(environment) or {}
    plain = {entry.name: entry for entry in environment.stats.entries.values()}
    plain[TOTAL] = environment.stats.total
    lines = ["", "=== Latency from the intended start (coordinated omission corrected) " + "=" * 20,
             f"{'request':<44}{'count':>8}  {'p50 locust/corr':>16}  {'p95 locust/corr':>16}  {'p99 locust/corr':>16}"]
    for name, row in corrected.items():
        entry = plain.get(name)
        cells = []
        for key, q in PERCENTILES:
            seen = entry.get_response_time_percentile(q) if entry is not None and entry.num_requests else None
            cells.append(f"{_ms(seen)}/{_ms(row[key])}")
        lines.append(f"{name[:43]:<44}{row['count']:>8}  " + "  ".join(f"{cell:>16}" for cell in cells))
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
