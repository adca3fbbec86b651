"""Switchable faults: added latency, injected 500s, and the Go service's unsafe buy."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

MAX_LATENCY_MS = 60_000.0
# The Go service's read-to-write gap is short next to its request time: 30 concurrent buyers of one
# product lost about 7% of successful buys, and a product bought by one sequential client meanwhile
# lost a similar share. RACY_SHARE of writes land just after the next write by someone else (so each
# overwrites exactly one), which gives that share at any request rate; see product_service.race_probe.
RACY_SHARE = 0.07
RACY_MAX_WAIT_S = 0.01  # with no concurrent write this soon, the racy write lands alone and loses nothing


def parse_latency(text: str) -> tuple[float, float]:
    """'20:80' -> (20, 80); '50' -> (50, 50); '0' -> (0, 0), meaning none. ValueError names the problem."""
    parts = text.split(":")
    if len(parts) > 2:
        raise ValueError(f"--latency-ms {text!r}: expected MIN:MAX or MS, e.g. 20:80")
    try:
        low, high = (float(p) for p in (parts if len(parts) == 2 else parts * 2))
    except ValueError:
        raise ValueError(f"--latency-ms {text!r}: MIN and MAX must be numbers of milliseconds, e.g. 20:80") from None
    if not (0 <= low <= high <= MAX_LATENCY_MS):
        raise ValueError(f"--latency-ms {text!r}: need 0 <= MIN <= MAX <= {MAX_LATENCY_MS:.0f}")
    return low, high


def parse_error_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"--error-rate {text!r}: expected a share between 0 and 1, e.g. 0.05")
    return rate


@dataclass(frozen=True, slots=True)
class Faults:
    """What to inject into every request except GET /health (the runner's readiness probe)."""

    latency_ms: tuple[float, float] | None = None
    error_rate: float = 0.0
    unsafe_buy: bool = False

    def __post_init__(self) -> None:
        if self.latency_ms is not None and self.latency_ms[1] <= 0.0:
            object.__setattr__(self, "latency_ms", None)  # 0 or 0:0 means no added latency

    @property
    def per_request(self) -> bool:
        return self.latency_ms is not None or self.error_rate > 0.0

    async def delay(self) -> None:
        """Sleep a uniform random share of the latency range without blocking other requests."""
        if self.latency_ms is not None:
            await asyncio.sleep(random.uniform(*self.latency_ms) / 1000.0)

    def should_fail(self) -> bool:
        return self.error_rate > 0.0 and random.random() < self.error_rate


class RacyWrites:
    """Writes without a lock: a share of them is applied right after the next write, from what they read before it."""

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[[], object], asyncio.Future[None]]] = []

    def is_racy(self) -> bool:
        return random.random() < RACY_SHARE

    async def after_next_write(self, write: Callable[[], object]) -> None:
        """Run `write` once the next write commits (overwriting it), or alone after RACY_MAX_WAIT_S."""
        loop = asyncio.get_running_loop()
        entry = (write, loop.create_future())
        self._pending.append(entry)
        timer = loop.call_later(RACY_MAX_WAIT_S, self._land, [entry])
        try:
            await entry[1]
        finally:
            timer.cancel()

    def committed(self) -> None:
        """Called after every write that is not itself racy: the waiting racy writes land on top of it."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._land(pending)

    def _land(self, entries: list[tuple[Callable[[], object], asyncio.Future[None]]]) -> None:
        for entry in entries:
            write, done = entry
            if done.done():
                continue
            if entry in self._pending:
                self._pending.remove(entry)
            try:
                write()
            except Exception as exc:  # handed to the waiting request, which answers it
                done.set_exception(exc)
            else:
                done.set_result(None)
