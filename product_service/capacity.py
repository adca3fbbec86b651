"""Capacity mode: N handlers, each busy for exactly T per request, and a FIFO queue in front of them.

The true capacity is N / T requests per second. Every request except those to /health takes the
handler that frees first; it waits in the queue until then and holds the handler for exactly T
from that moment. Times are kept on the handlers' own schedule (when each frees), not on when a
timer happened to fire, so a late wake-up delays one answer but never the next request's start:
the service sustains N / T exactly for as long as its CPU keeps up (see MAX_HONEST_RPS). Once the
T is over the request is handled as it would be without the mode (delays, faults, profile), so
those add to its answer time without holding a handler and the capacity stays N / T.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

MAX_HANDLERS = 100_000
MIN_SERVICE_MS, MAX_SERVICE_MS = 0.1, 60_000.0
# The highest capacity verified honest on this 2-core machine with a constant-rate generator beside the
# service (below it the median answer within 2 ms of T, above it exactly N/T answered); closed-loop the
# rate stayed exact to 5000/s. Measured: docs/product_service_api_spec.md, "Capacity mode".
MAX_HONEST_RPS = 2000.0


def parse_handlers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_HANDLERS:
        raise ValueError(f"--handlers {text!r}: expected a whole number of handlers, 1..{MAX_HANDLERS}")
    return count


def parse_service_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not MIN_SERVICE_MS <= value <= MAX_SERVICE_MS:
        raise ValueError(f"--service-time-ms {text!r}: expected milliseconds, {MIN_SERVICE_MS:g}..{MAX_SERVICE_MS:.0f}")
    return value


def parse_queue_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"--queue-limit {text!r}: expected a whole number of waiting requests >= 0 "
                         "(0: refuse whenever every handler is busy)")
    return value


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Capacity:
    """The mode's settings: `handlers` at once, `service_ms` each, at most `queue_limit` waiting (None: no bound)."""

    handlers: int
    service_ms: float
    queue_limit: int | None = None

    @property
    def requests_per_s(self) -> float:
        return self.handlers * 1000.0 / self.service_ms

    def banner(self) -> str:
        queue = "unbounded (at most one request per open connection)" if self.queue_limit is None \
            else f"at most {self.queue_limit} waiting, beyond that 503"
        return (f"capacity {_number(self.requests_per_s)} requests/s: {self.handlers} handlers x "
                f"{_number(self.service_ms)} ms, queue {queue}; /health bypasses the queue")


class Handlers:
    """The handlers' schedule: when each frees, and the starts of the requests still waiting (in order)."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.refusal = (f"Service at capacity (handlers busy: {capacity.handlers}, requests waiting: "
                        f"{capacity.queue_limit}); retry later")
        self._service_s = capacity.service_ms / 1000.0
        self._free_at = [0.0] * capacity.handlers  # a heap
        self._waiting: deque[float] = deque()  # service starts still ahead, ascending (first come, first served)
        self.refused = 0

    def admit(self, now: float) -> tuple[float, float] | None:
        """(start, end) of the handler time this request gets, arriving at `now`; None when the queue is full."""
        start = self._free_at[0]
        if start <= now:
            start = now
        else:
            waiting = self._waiting
            while waiting and waiting[0] <= now:
                waiting.popleft()
            limit = self.capacity.queue_limit
            if limit is not None and len(waiting) >= limit:
                self.refused += 1
                return None
            waiting.append(start)
        end = start + self._service_s
        heapq.heapreplace(self._free_at, end)
        return start, end
