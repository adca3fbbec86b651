"""The oracle's records and its result: what a buy or stock update looked like, a violation, the verdict."""
from __future__ import annotations

from datetime import datetime, timezone
from collections import defaultdict
from typing import Any, Iterable, NamedTuple

BUY_OUTCOMES = ("ok", "insufficient", "not_found", "failed")
STOCK_SET_OUTCOMES = ("ok", "failed", "rejected")
MAX_VIOLATIONS_PER_KIND = 5  # listed per product and kind; every one is counted (OracleResult.counts)
MAX_VIOLATIONS_LISTED = 50
MAX_EVIDENCE = 10
VIOLATION_KINDS = ("oversell", "conservation", "lost_update", "negative_stock")  # the order reports show them in


# Records ------------------------------------------------------------------------------------------

class BuyRecord(NamedTuple):
    """One POST /products/buy as the load generator saw it (times are time.time() wall clock)."""

    start: float
    end: float
    product: str
    quantity: int
    outcome: str  # ok | insufficient | not_found | failed (unknown: may or may not have been applied)
    remaining: int | None = None  # remainingStock of an ok answer
    available: int | None = None  # "Available: N" of an insufficient answer
    source: str = "local"  # the load-generator process, for clock-skew handling


class StockSetRecord(NamedTuple):
    """One PATCH /products/stock (times are time.time() wall clock)."""

    start: float
    end: float
    product: str
    stock: int
    outcome: str  # ok | failed (unknown) | rejected (4xx: certainly not applied)
    source: str = "local"


def stock_update_outcome(status: int, updated: bool) -> str:
    """How the oracle reads a stock update: applied ("ok"), certainly not applied (a 4xx: "rejected") or unknown."""
    if updated:
        return "ok"
    return "rejected" if 400 <= status < 500 else "failed"


# Result -------------------------------------------------------------------------------------------

def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")


def record_dict(record: BuyRecord | StockSetRecord) -> dict[str, Any]:
    """A record as JSON-able evidence, with ISO-8601 UTC times."""
    common = {"product": record.product, "start": _iso(record.start), "end": _iso(record.end),
              "duration_ms": round((record.end - record.start) * 1000, 3), "source": record.source}
    if isinstance(record, StockSetRecord):
        return {"request": "stock update", **common, "stock": record.stock, "outcome": record.outcome}
    evidence = {"request": "buy", **common, "quantity": record.quantity, "outcome": record.outcome}
    if record.remaining is not None:
        evidence["remaining"] = record.remaining
    if record.available is not None:
        evidence["available"] = record.available
    return evidence


class Violation(NamedTuple):
    """A consistency violation: which product, what kind, one line with the numbers, the records involved."""

    product: str
    kind: str  # conservation | lost_update | oversell | negative_stock
    message: str
    evidence: tuple = ()
    units: int | None = None  # units oversold, lost or unaccounted for, where the kind has a size

    def to_dict(self) -> dict[str, Any]:
        data = {"product": self.product, "kind": self.kind, "message": self.message,
                "evidence": [record_dict(r) if isinstance(r, tuple) else r for r in self.evidence[:MAX_EVIDENCE]]}
        if self.units is not None:
            data["units"] = self.units
        return data


class OracleResult:
    """The oracle's verdict: passed True (something decided, no violation), False (a violation), None (nothing decided).

    violations lists at most MAX_VIOLATIONS_LISTED findings (and at most MAX_VIOLATIONS_PER_KIND per product
    and kind); counts and units per kind are complete.
    """

    __slots__ = ("passed", "products_checked", "inconclusive", "violations", "violations_total",
                 "dropped_records", "notes", "counts", "units")

    def __init__(self, passed: bool | None, products_checked: int, inconclusive: list[tuple[str, str]],
                 violations: list[Violation], violations_total: int = 0, dropped_records: int = 0,
                 notes: Iterable[str] = (), counts: dict[str, int] | None = None,
                 units: dict[str, int] | None = None) -> None:
        self.passed = passed
        self.products_checked = products_checked
        self.inconclusive = inconclusive
        self.violations = violations
        if counts is None:
            counts = defaultdict(int)
            for v in violations:
                counts[v.kind] += 1
        self.counts = {kind: counts[kind] for kind in VIOLATION_KINDS if counts.get(kind)}
        self.units = {kind: n for kind, n in (units or {}).items() if n}
        self.violations_total = max(violations_total, len(violations), sum(self.counts.values()))
        self.dropped_records = dropped_records
        self.notes = list(notes)

    @classmethod
    def undecided(cls, note: str) -> "OracleResult":
        """Nothing could be checked (no test ran, the oracle itself failed)."""
        return cls(None, 0, [], [], notes=[note])

    def to_dict(self) -> dict[str, Any]:
        """The "consistency" object of summary.json (plus inconclusive_products, violations_total, the complete
        violation_counts and violation_units per kind, and notes)."""
        return {
            "enabled": True,
            "passed": self.passed,
            "products_checked": self.products_checked,
            "inconclusive": len(self.inconclusive),
            "inconclusive_products": [{"product": p, "reason": r} for p, r in self.inconclusive],
            "violations": [v.to_dict() for v in self.violations],
            "violations_total": self.violations_total,
            "violation_counts": dict(self.counts),
            "violation_units": dict(self.units),
            "dropped_records": self.dropped_records,
            "notes": list(self.notes),
        }

    def summary_line(self) -> str:
        state = {True: "passed", False: "FAILED", None: "inconclusive"}[self.passed]
        line = (f"consistency {state}: {self.products_checked} products checked, "
                f"{len(self.inconclusive)} inconclusive, {self.violations_total} violations")
        if self.counts:
            line += " (" + counts_text(self.counts, self.units) + ")"
        if self.violations:
            line += f"; first: {self.violations[0].product}: {self.violations[0].message}"
        if self.notes:
            line += "; " + "; ".join(self.notes)
        return line

    def __repr__(self) -> str:
        return f"OracleResult({self.summary_line()!r})"


def counts_text(counts: dict[str, int], units: dict[str, int] | None = None) -> str:
    """"oversell x1 (537 units), lost_update x12": the complete counts per kind, in VIOLATION_KINDS order."""
    units = units or {}
    parts = []
    for kind in sorted(counts, key=lambda k: (VIOLATION_KINDS.index(k) if k in VIOLATION_KINDS else 99, k)):
        parts.append(f"{kind} x{counts[kind]}" + (f" ({units[kind]} units)" if units.get(kind) else ""))
    return ", ".join(parts)
