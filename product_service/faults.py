"""Switchable faults: added latency, injected 500s, and the Go service's unsafe buy."""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

MAX_LATENCY_MS = 60_000.0
UNSAFE_PAUSE_MS = (1.0, 5.0)  # the gap between read and write in which concurrent buys interleave


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


async def unsafe_pause() -> None:
    """The window between reading and writing stock in which the Go service loses updates."""
    await asyncio.sleep(random.uniform(*UNSAFE_PAUSE_MS) / 1000.0)
