"""Per-process custom counters (purchases, business outcomes, validation failures) for the run report.

Plain ints and dicts, no I/O, no lock: every update is a few dictionary operations with no
gevent switch point in between, so greenlets of one load generator can never interleave inside
one. Under real threads an increment can be lost (the counters are statistics, never control
flow); nothing in the suite updates them from a non-gevent thread.
On a distributed run each worker sends `drain()` (or `snapshot()`) to the master, which calls
`merge()`; the master's own STATS then holds the run's totals.
"""
from __future__ import annotations

from collections.abc import Mapping

MAX_KEYS = 500
OTHER = "(other)"

_KEYED = ("business_outcomes", "validation_failures", "unexpected_statuses")
_ROW_METRIC = {
    "business_outcomes": "business_outcome",
    "validation_failures": "validation_failure",
    "unexpected_statuses": "unexpected_status",
}


def _bump(counts: dict[str, int], key: str, amount: int = 1) -> None:
    """Add to one key; once MAX_KEYS distinct keys exist, new keys share the "(other)" bucket."""
    if key in counts or len(counts) < MAX_KEYS - 1:
        counts[key] = counts.get(key, 0) + amount
    else:
        counts[OTHER] = counts.get(OTHER, 0) + amount


def _count(value: object) -> int:
    """A count from another process's snapshot; anything that is not a non-negative int counts 0."""
    return value if type(value) is int and value > 0 else 0


class RunStats:
    """Counters a load generator keeps beside Locust's own request statistics."""

    __slots__ = ("purchases", "units_sold", "stock_updates", "business_outcomes",
                 "validation_failures", "unexpected_statuses")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.purchases = 0
        self.units_sold = 0
        self.stock_updates = 0
        self.business_outcomes: dict[str, int] = {}
        self.validation_failures: dict[str, int] = {}
        self.unexpected_statuses: dict[str, int] = {}

    def purchase(self, units: int) -> None:
        """A buy that the service confirmed (200)."""
        self.purchases += 1
        self.units_sold += units

    def business_outcome(self, kind: str) -> None:
        """An expected non-error outcome: "insufficient_stock", "empty_category"."""
        _bump(self.business_outcomes, kind)

    def stock_update(self) -> None:
        """A stock update that the service confirmed (200)."""
        self.stock_updates += 1

    def validation_failure(self, check: str) -> None:
        """A response that failed the named validator check."""
        _bump(self.validation_failures, check)

    def unexpected_status(self, request_name: str, status: int) -> None:
        """A response whose HTTP status the contract does not allow for this request."""
        _bump(self.unexpected_statuses, f"{request_name} {status}")

    def snapshot(self) -> dict:
        """The counters as a JSON-able dict (copies: later updates do not change it)."""
        return {
            "purchases": self.purchases,
            "units_sold": self.units_sold,
            "insufficient_stock": self.business_outcomes.get("insufficient_stock", 0),
            "stock_updates": self.stock_updates,
            "business_outcomes": dict(self.business_outcomes),
            "validation_failures": dict(self.validation_failures),
            "unexpected_statuses": dict(self.unexpected_statuses),
        }

    def drain(self) -> dict:
        """snapshot() and reset() in one step: what a worker sends to the master each report."""
        snapshot = self.snapshot()
        self.reset()
        return snapshot

    def merge(self, snapshot: Mapping) -> None:
        """Add another process's snapshot; malformed parts are ignored rather than raised."""
        if not isinstance(snapshot, Mapping):
            return
        self.purchases += _count(snapshot.get("purchases"))
        self.units_sold += _count(snapshot.get("units_sold"))
        self.stock_updates += _count(snapshot.get("stock_updates"))
        for section in _KEYED:
            counts = snapshot.get(section)
            if isinstance(counts, Mapping):
                mine = getattr(self, section)
                for key, value in counts.items():
                    amount = _count(value)
                    if amount:
                        _bump(mine, str(key), amount)

    def rows(self) -> list[tuple[str, str, int]]:
        """(metric, key, value) rows for a CSV or table; keyed metrics sorted by key."""
        rows = [("purchases", "", self.purchases), ("units_sold", "", self.units_sold),
                ("stock_updates", "", self.stock_updates)]
        for section in _KEYED:
            metric = _ROW_METRIC[section]
            rows.extend((metric, key, value) for key, value in sorted(getattr(self, section).items()))
        return rows


STATS = RunStats()
