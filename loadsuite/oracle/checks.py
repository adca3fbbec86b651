"""The oracle's pure core: records, the per-product checks and the result; imports nothing from Locust.

Per product: conservation (from the last stock update nothing overlapped, or the start snapshot, the base
minus the units of the successful buys after it equals the final stock), lost updates (two successful buys
with no possible stock update between them never report the same remainingStock), oversell and negative
stock. What overlaps make undecidable is INCONCLUSIVE, never a violation and never a pass.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple

BUY_OUTCOMES = ("ok", "insufficient", "not_found", "failed")
STOCK_SET_OUTCOMES = ("ok", "failed", "rejected")
MAX_VIOLATIONS_PER_KIND = 5  # per product; all are counted in violations_total
MAX_VIOLATIONS_LISTED = 50
MAX_EVIDENCE = 10
_AVAILABLE = re.compile(r"Available:\s*(-?\d+)")


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


def parse_available(message: str | None) -> int | None:
    """N from an INSUFFICIENT_STOCK message "... Available: N, Requested: M", or None."""
    match = _AVAILABLE.search(message or "")
    return int(match.group(1)) if match else None


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

    def to_dict(self) -> dict[str, Any]:
        return {"product": self.product, "kind": self.kind, "message": self.message,
                "evidence": [record_dict(r) if isinstance(r, tuple) else r for r in self.evidence[:MAX_EVIDENCE]]}


class OracleResult:
    """The oracle's verdict: passed True (something decided, no violation), False (a violation), None (nothing decided)."""

    __slots__ = ("passed", "products_checked", "inconclusive", "violations", "violations_total",
                 "dropped_records", "notes")

    def __init__(self, passed: bool | None, products_checked: int, inconclusive: list[tuple[str, str]],
                 violations: list[Violation], violations_total: int = 0, dropped_records: int = 0,
                 notes: Iterable[str] = ()) -> None:
        self.passed = passed
        self.products_checked = products_checked
        self.inconclusive = inconclusive
        self.violations = violations
        self.violations_total = max(violations_total, len(violations))
        self.dropped_records = dropped_records
        self.notes = list(notes)

    @classmethod
    def undecided(cls, note: str) -> "OracleResult":
        """Nothing could be checked (no test ran, the oracle itself failed)."""
        return cls(None, 0, [], [], notes=[note])

    def to_dict(self) -> dict[str, Any]:
        """The "consistency" object of summary.json (plus inconclusive_products, violations_total and notes)."""
        return {
            "enabled": True,
            "passed": self.passed,
            "products_checked": self.products_checked,
            "inconclusive": len(self.inconclusive),
            "inconclusive_products": [{"product": p, "reason": r} for p, r in self.inconclusive],
            "violations": [v.to_dict() for v in self.violations],
            "violations_total": self.violations_total,
            "dropped_records": self.dropped_records,
            "notes": list(self.notes),
        }

    def summary_line(self) -> str:
        state = {True: "passed", False: "FAILED", None: "inconclusive"}[self.passed]
        line = (f"consistency {state}: {self.products_checked} products checked, "
                f"{len(self.inconclusive)} inconclusive, {self.violations_total} violations")
        if self.violations:
            kinds = defaultdict(int)
            for v in self.violations:
                kinds[v.kind] += 1
            line += " (" + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) + ")"
            line += f"; first: {self.violations[0].product}: {self.violations[0].message}"
        if self.notes:
            line += "; " + "; ".join(self.notes)
        return line

    def __repr__(self) -> str:
        return f"OracleResult({self.summary_line()!r})"


# The check ----------------------------------------------------------------------------------------

def _gap(a, b, skew: float) -> float:
    """How far two records' clocks may disagree: nothing within one process, skew across processes."""
    return 0.0 if a.source == b.source else skew


def _before(a, b, skew: float) -> bool:
    """a certainly took effect before b began (true even if their clocks disagree by up to skew)."""
    return a.end + _gap(a, b, skew) <= b.start


def _overlap(a, b, skew: float) -> bool:
    return not _before(a, b, skew) and not _before(b, a, skew)


class _Sets:
    """A product's applied-or-unknown stock updates, sorted by start, for "could one come between?" queries."""

    def __init__(self, sets: list[StockSetRecord], skew: float) -> None:
        self.sets = sorted(sets, key=lambda s: s.start)
        self.starts = [s.start for s in self.sets]
        self.longest = max((s.end - s.start for s in self.sets), default=0.0)
        self.skew = skew

    def between(self, first, last) -> StockSetRecord | None:
        """A stock update that could take effect after `first` began and before `last` ended, if any."""
        lo, hi = min(first.start, last.start), max(first.end, last.end)
        index = bisect_left(self.starts, hi + self.skew)
        while index > 0:
            index -= 1
            s = self.sets[index]
            if s.start + self.longest + self.skew <= lo:
                break
            if s.start < hi + max(_gap(s, first, self.skew), _gap(s, last, self.skew)) \
                    and s.end + max(_gap(s, first, self.skew), _gap(s, last, self.skew)) > lo:
                return s
        return None


def check(start_stock: dict[str, int] | None, final_stock: dict[str, int] | None,
          buys: Iterable[BuyRecord], stock_sets: Iterable[StockSetRecord], clock_skew_s: float = 0.05,
          dropped_products: Iterable[str] = (), missing_sources: Iterable[str] = (),
          start_error: str | None = None, final_error: str | None = None,
          dropped_records: int = 0) -> OracleResult:
    """Check conservation, lost updates and oversell per product; undecidable products are inconclusive.

    missing_sources names load generators whose records never arrived: then only negative stock can be
    decided (an unseen stock update could explain any other anomaly).
    """
    skew = max(0.0, float(clock_skew_s))
    dropped = set(dropped_products)
    missing = sorted(set(missing_sources))
    per_product: dict[str, tuple[list[BuyRecord], list[StockSetRecord]]] = defaultdict(lambda: ([], []))
    for b in buys:
        per_product[b.product][0].append(b)
    for s in stock_sets:
        if s.outcome != "rejected":
            per_product[s.product][1].append(s)
    products = set(start_stock or ()) | set(final_stock or ()) | dropped
    products |= {p for p, (bs, ss) in per_product.items() if ss or any(b.outcome in ("ok", "failed") for b in bs)}

    violations: list[Violation] = []
    inconclusive: list[tuple[str, str]] = []
    for product in sorted(products):
        buys_p, sets_p = per_product.get(product, ([], []))
        found: list[Violation] = []
        found += _negative_stock(product, buys_p, (final_stock or {}).get(product))
        if missing:
            reason = f"records missing from {', '.join(missing)}"
        elif product in dropped:
            reason = "records dropped (more than oracle.max_records)"
        else:
            index = _Sets(sets_p, skew)
            found += _lost_updates(product, buys_p, index)
            found += _oversells(product, buys_p, index)
            reason, conservation = _conservation(product, buys_p, sets_p, skew, start_stock, final_stock,
                                                 start_error, final_error)
            if conservation is not None:
                found.append(conservation)
        if reason:
            inconclusive.append((product, reason))
        violations += found

    total = len(violations)
    notes = []
    if missing:
        notes.append(f"{', '.join(missing)} did not report: results inconclusive")
    if start_error:
        notes.append(f"start snapshot failed: {start_error}")
    if final_error:
        notes.append(f"final snapshot failed: {final_error}")
    if total > MAX_VIOLATIONS_LISTED:
        notes.append(f"{total - MAX_VIOLATIONS_LISTED} more violations not listed")
    if violations:
        passed: bool | None = False
    else:
        passed = True if len(products) > len(inconclusive) else None
    if not products:
        notes.append("nothing to check: no products in the snapshots and no records")
    return OracleResult(passed, len(products), inconclusive, violations[:MAX_VIOLATIONS_LISTED], total,
                        dropped_records, notes)


def _negative_stock(product: str, buys: list[BuyRecord], final: int | None) -> list[Violation]:
    found = []
    for b in buys:
        if b.outcome == "ok" and b.remaining is not None and b.remaining < 0:
            found.append(Violation(product, "negative_stock",
                                   f"a buy of {b.quantity} succeeded and reported remainingStock {b.remaining}", (b,)))
            if len(found) >= MAX_VIOLATIONS_PER_KIND:
                break
    if final is not None and final < 0:
        found.append(Violation(product, "negative_stock", f"the final stock is {final}"))
    return found


def _lost_updates(product: str, buys: list[BuyRecord], sets: _Sets, pairs_per_buy: int = 3) -> list[Violation]:
    """Two successful buys reporting the same remainingStock with no stock update that could come between."""
    by_remaining: dict[int, list[BuyRecord]] = defaultdict(list)
    for b in buys:
        if b.outcome == "ok" and b.remaining is not None:
            by_remaining[b.remaining].append(b)
    found = []
    for remaining, group in sorted(by_remaining.items()):
        if len(group) < 2:
            continue
        group.sort(key=lambda b: b.start)
        # A stock update that starts between two buys' starts could come between them: no need to look closer.
        windows = [bisect_left(sets.starts, b.start) for b in group]
        for i, first in enumerate(group):
            for j in range(i + 1, min(i + 1 + pairs_per_buy, len(group))):
                if windows[j] != windows[i]:
                    break
                second = group[j]
                if sets.between(first, second) is None:
                    found.append(Violation(
                        product, "lost_update",
                        f"two successful buys ({first.quantity} and {second.quantity} units) both reported "
                        f"remainingStock {remaining} with no stock update that could come between them: "
                        f"one of the two stock changes was lost", (first, second)))
                    break
            if len(found) >= MAX_VIOLATIONS_PER_KIND:
                return found
    return found


def _oversells(product: str, buys: list[BuyRecord], sets: _Sets) -> list[Violation]:
    """An INSUFFICIENT_STOCK "Available: A", then (no stock update possibly between) a successful buy of more than A."""
    ok = sorted((b for b in buys if b.outcome == "ok"), key=lambda b: b.start)
    if not ok:
        return []
    starts = [b.start for b in ok]
    largest = max(b.quantity for b in ok)
    found = []
    refused = sorted((b for b in buys if b.outcome == "insufficient" and b.available is not None),
                     key=lambda b: b.start)
    for no in refused:
        if largest <= no.available:
            continue
        # Every buy that could follow `no` with no restock in between starts before the first stock
        # update that is not certainly over when `no` began.
        k = bisect_left(sets.starts, no.start - sets.longest - sets.skew)
        while k < len(sets.sets) and _before(sets.sets[k], no, sets.skew):
            k += 1
        limit = sets.sets[k].start if k < len(sets.sets) else float("inf")
        for index in range(bisect_left(starts, no.end), len(ok)):
            later = ok[index]
            if later.start > limit:
                break
            if later.quantity <= no.available or not _before(no, later, sets.skew):
                continue
            if sets.between(no, later) is not None:
                break  # this and every later buy may follow a restock
            found.append(Violation(
                product, "oversell",
                f"a buy of {later.quantity} succeeded after INSUFFICIENT_STOCK said only {no.available} were "
                f"available, with no stock update in between: {later.quantity - no.available} units oversold",
                (no, later)))
            break
        if len(found) >= MAX_VIOLATIONS_PER_KIND:
            break
    return found


def _conservation(product, buys, sets, skew, start_stock, final_stock, start_error, final_error):
    """(inconclusive reason or None, violation or None) for base - units sold after it == final stock."""
    final = None if final_stock is None else final_stock.get(product)
    if final is None:
        return (f"final snapshot failed: {final_error}" if final_error else
                "no final stock" if final_stock is None else "not in the final stock snapshot"), None
    changing = [b for b in buys if b.outcome in ("ok", "failed")]
    if sets:
        last = max(sets, key=lambda s: s.start)
        if any(s is not last and not _before(s, last, skew) for s in sets):
            return "the last stock updates overlap each other", None
        if last.outcome != "ok":
            return "the last stock update has an unknown outcome (failed)", None
        if any(_overlap(b, last, skew) for b in changing):
            return "a buy overlaps the last stock update", None
        base, base_record = last.stock, last
        base_text = f"the stock update to {last.stock}"
        after = [b for b in changing if _before(last, b, skew)]
    else:
        start = None if start_stock is None else start_stock.get(product)
        if start is None:
            return (f"start snapshot failed: {start_error}" if start_error else
                    "no start stock" if start_stock is None else "not in the start stock snapshot"), None
        base, base_record, base_text, after = start, None, "the start snapshot", changing
    if any(b.outcome == "failed" for b in after):
        return "a buy after the last known stock has an unknown outcome (failed)", None
    sold_records = [b for b in after if b.outcome == "ok"]
    sold = sum(b.quantity for b in sold_records)
    expected = base - sold
    if expected == final:
        return None, None
    if final > expected:
        detail = f"{final - expected} units sold that the stock does not account for"
    else:
        detail = f"{expected - final} units disappeared without a successful buy"
    message = (f"stock went {base} -> {final} (from {base_text}) but {sold} units were sold successfully "
               f"in {len(sold_records)} buys: {detail}")
    evidence = ((base_record,) if base_record else ()) + tuple(sold_records[-(MAX_EVIDENCE - 1):])
    return None, Violation(product, "conservation", message, evidence)
