"""The oracle's pure core: records, the per-product checks and the result; imports nothing from Locust.

Per product:
- oversell: confirmed successful buys are a lower bound on what was sold. Units confirmed certainly after
  a known stock level (start snapshot, applied stock update, INSUFFICIENT_STOCK "Available: N") beyond
  that level plus every restock that could come between are oversold, whatever else has an unknown outcome.
- conservation: the final stock must lie in the interval the records allow (buys with unknown outcome, and
  buys or stock updates whose order is unknown, widen it); outside it is a violation by the size of the gap,
  inside a wide interval it is INCONCLUSIVE, never a violation and never a pass.
- lost updates: two successful buys with no possible stock update between them never report the same
  remainingStock; negative stock.
Counts per kind are complete; only the lists of findings and their evidence are capped.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Any, Iterable, NamedTuple

from .records import (BUY_OUTCOMES, MAX_EVIDENCE, MAX_VIOLATIONS_LISTED, MAX_VIOLATIONS_PER_KIND,  # noqa: F401
                      STOCK_SET_OUTCOMES, VIOLATION_KINDS, BuyRecord, OracleResult, StockSetRecord, Violation,
                      counts_text, stock_update_outcome, record_dict)


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

    listed: list[Violation] = []
    counts: dict[str, int] = defaultdict(int)
    units: dict[str, int] = defaultdict(int)
    inconclusive: list[tuple[str, str]] = []
    for product in sorted(products):
        buys_p, sets_p = per_product.get(product, ([], []))
        found: list[tuple[list[Violation], int, int]] = [_negative_stock(product, buys_p, (final_stock or {}).get(product))]
        if missing:
            reason = f"records missing from {', '.join(missing)}"
        elif product in dropped:
            reason = "records dropped (more than oracle.max_records)"
        else:
            index = _Sets(sets_p, skew)
            found.append(_lost_updates(product, buys_p, index))
            found.append(_oversell(product, buys_p, sets_p, start_stock, skew))
            reason, conservation = _conservation(product, buys_p, sets_p, skew, start_stock, final_stock,
                                                 start_error, final_error)
            if conservation is not None:
                found.append(([conservation], 1, conservation.units or 0))
        found = [f for f in found if f[1]]
        found.sort(key=lambda f: VIOLATION_KINDS.index(f[0][0].kind))  # the plainest fact first: oversell
        for violations, count, lost_units in found:
            if count:
                counts[violations[0].kind] += count
                units[violations[0].kind] += lost_units
            listed += violations[:MAX_VIOLATIONS_PER_KIND]
        if reason:
            inconclusive.append((product, reason))

    total = sum(counts.values())
    notes = []
    if missing:
        notes.append(f"{', '.join(missing)} did not report: results inconclusive")
    if start_error:
        notes.append(f"start snapshot failed: {start_error}")
    if final_error:
        notes.append(f"final snapshot failed: {final_error}")
    if total > min(len(listed), MAX_VIOLATIONS_LISTED):
        notes.append(f"{total - min(len(listed), MAX_VIOLATIONS_LISTED)} more violations not listed")
    if total:
        passed: bool | None = False
    else:
        passed = True if len(products) > len(inconclusive) else None
    if not products:
        notes.append("nothing to check: no products in the snapshots and no records")
    return OracleResult(passed, len(products), inconclusive, listed[:MAX_VIOLATIONS_LISTED], total,
                        dropped_records, notes, counts, units)


def _negative_stock(product: str, buys: list[BuyRecord], final: int | None) -> tuple[list[Violation], int, int]:
    """(the first violations, how many in all, 0): a successful buy reporting remainingStock < 0, a final stock < 0."""
    found, count = [], 0
    for b in buys:
        if b.outcome == "ok" and b.remaining is not None and b.remaining < 0:
            count += 1
            if len(found) < MAX_VIOLATIONS_PER_KIND:
                found.append(Violation(product, "negative_stock",
                                       f"a buy of {b.quantity} succeeded and reported remainingStock {b.remaining}", (b,)))
    if final is not None and final < 0:
        count += 1
        found.insert(0, Violation(product, "negative_stock", f"the final stock is {final}", units=-final))
    return found, count, 0


def _lost_updates(product: str, buys: list[BuyRecord], sets: _Sets) -> tuple[list[Violation], int, int]:
    """Successful buys reporting the same remainingStock as an earlier one with no stock update that could
    come between: each such buy is one lost update (counted all; the first MAX_VIOLATIONS_PER_KIND listed)."""
    by_remaining: dict[int, list[BuyRecord]] = defaultdict(list)
    for b in buys:
        if b.outcome == "ok" and b.remaining is not None:
            by_remaining[b.remaining].append(b)
    found, count, lost_units = [], 0, 0
    for remaining, group in sorted(by_remaining.items()):
        if len(group) < 2:
            continue
        group.sort(key=lambda b: b.start)
        # A stock update that starts between two buys' starts could come between them: no need to look closer.
        windows = [bisect_left(sets.starts, b.start) for b in group]
        for j in range(1, len(group)):
            first, second = group[j - 1], group[j]
            if windows[j] != windows[j - 1] or sets.between(first, second) is not None:
                continue
            count += 1
            lost_units += min(first.quantity, second.quantity)
            if len(found) < MAX_VIOLATIONS_PER_KIND:
                found.append(Violation(
                    product, "lost_update",
                    f"two successful buys ({first.quantity} and {second.quantity} units) both reported "
                    f"remainingStock {remaining} with no stock update that could come between them: "
                    f"one of the two stock changes was lost", (first, second), min(first.quantity, second.quantity)))
    return found, count, lost_units


class _Anchor(NamedTuple):
    """A stock level the service is known to have had at some moment between start and end."""

    level: int
    start: float
    end: float
    source: str
    record: Any  # the record that shows it, None for the start snapshot
    text: str


def _oversell(product: str, buys: list[BuyRecord], sets: list[StockSetRecord], start_stock: dict[str, int] | None,
              skew: float) -> tuple[list[Violation], int, int]:
    """Confirmed buys are a lower bound on what was sold: units confirmed certainly after a known stock level
    beyond that level plus every restock that could come between are oversold, whatever else is unknown.

    Known levels: the start snapshot, each applied stock update, each INSUFFICIENT_STOCK "Available: N".
    For each, every prefix of the buys after it is weighed against the restocks that could precede the end
    of that prefix (a restock that may fall anywhere in it counts in full: more restocks only raise the bound,
    so no correct store is ever flagged). One violation per product: the largest number of units oversold.
    O((buys + stock updates + refusals) log n): one suffix maximum serves every known level.
    """
    ok = sorted((b for b in buys if b.outcome == "ok"), key=lambda b: b.start)
    if not ok:
        return [], 0, 0
    refusals = [b for b in buys if b.outcome == "insufficient" and b.available is not None]
    gap = 0.0 if len({r.source for r in (*ok, *sets, *refusals)}) <= 1 else skew
    restocks = sorted(sets, key=lambda s: s.start)  # applied and unknown: each may add up to its value
    restock_starts = [s.start for s in restocks]
    longest = max((s.end - s.start for s in restocks), default=0.0)
    added = [0]  # added[k]: the units the first k restocks could add
    for s in restocks:
        added.append(added[-1] + max(0, s.stock))
    sold = [0]  # sold[i]: units of the first i confirmed buys
    for b in ok:
        sold.append(sold[-1] + b.quantity)
    # best_from[i]: the largest sold[j + 1] - added[reach(j)] for j >= i, where reach(j) counts the restocks
    # that begin before some buy up to j ends (they could come before that buy), and where it is reached.
    reach, ahead = 0, []
    for j, b in enumerate(ok):
        reach = max(reach, bisect_left(restock_starts, b.end + gap))
        ahead.append(sold[j + 1] - added[reach])
    best_from: list[tuple[int, int]] = [(0, 0)] * (len(ok) + 1)
    best_from[len(ok)] = (-(1 << 62), len(ok))
    for j in range(len(ok) - 1, -1, -1):
        best_from[j] = max((ahead[j], j), best_from[j + 1], key=lambda pair: pair[0])
    starts = [b.start for b in ok]
    anchors: list[_Anchor] = []
    if start_stock is not None and product in start_stock:
        anchors.append(_Anchor(start_stock[product], float("-inf"), float("-inf"), "", None,
                               f"the start snapshot showed {start_stock[product]} in stock"))
    anchors += [_Anchor(s.stock, s.start, s.end, s.source, s, f"the stock update set it to {s.stock}")
                for s in restocks if s.outcome == "ok"]
    anchors += [_Anchor(b.available, b.start, b.end, b.source, b,
                        f"INSUFFICIENT_STOCK said only {b.available} were available") for b in refusals]
    best: tuple[int, _Anchor, int, int, int] | None = None  # (units oversold, anchor, first buy, last buy, restocked)
    for anchor in anchors:
        first = bisect_left(starts, anchor.end + gap)  # buys that certainly began after the level was seen
        if first >= len(ok):
            continue
        top, last = best_from[first]
        # Restocks that certainly ended before the anchor began cannot come after it.
        before = bisect_left(restock_starts, anchor.start - longest - gap) if restocks else 0
        own = max(0, anchor.record.stock) if isinstance(anchor.record, StockSetRecord) else 0
        restocked = (sold[last + 1] - top) - added[before] - own
        excess = top - sold[first] - anchor.level + added[before] + own
        if excess > 0 and (best is None or excess > best[0]):
            best = (excess, anchor, first, last, restocked)
    if best is None:
        return [], 0, 0
    excess, anchor, first, last, restocked = best
    sold_records = ok[first:last + 1]
    units = sum(b.quantity for b in sold_records)
    restock_text = f" plus at most {restocked} units restocked in between" if restocked else \
        " with no stock update in between"
    message = (f"{units} units were confirmed sold in {len(sold_records)} buys after {anchor.text}"
               f"{restock_text}: {excess} units oversold")
    evidence = ((anchor.record,) if anchor.record is not None else ()) + tuple(sold_records[-(MAX_EVIDENCE - 1):])
    return [Violation(product, "oversell", message, evidence, excess)], 1, excess


def _conservation(product, buys, sets, skew, start_stock, final_stock, start_error, final_error):
    """(inconclusive reason or None, violation or None): the final stock must lie in the interval the records allow.

    The base is the last stock level applied: every stock update that no applied update certainly followed
    could be it (the start snapshot when no update is known to be applied). From a base, successful buys
    certainly after it were sold for sure; buys with unknown outcome after it, and successful buys that
    overlap it, may or may not count. A final stock outside every base's interval is a violation (by the size
    of the gap); inside a wide interval it is inconclusive; equal to a single possible value it passes.
    """
    final = None if final_stock is None else final_stock.get(product)
    if final is None:
        return (f"final snapshot failed: {final_error}" if final_error else
                "no final stock" if final_stock is None else "not in the final stock snapshot"), None
    changing = [b for b in buys if b.outcome in ("ok", "failed")]
    applied = sorted((s for s in sets if s.outcome == "ok"), key=lambda s: s.start, reverse=True)
    latest = applied[0].start if applied else float("-inf")
    bases = [s for s in sets if s.end + skew > latest and not any(_before(s, t, skew) for t in applied if t.start >= s.end)]
    ranges = []  # (low, high, base level, base record, certain buys)
    if not applied:
        start = None if start_stock is None else start_stock.get(product)
        if start is None:
            if not bases:
                return (f"start snapshot failed: {start_error}" if start_error else
                        "no start stock" if start_stock is None else "not in the start stock snapshot"), None
            return "no stock update is known to be applied and the start stock is unknown", None
        certain = [b for b in changing if b.outcome == "ok"]
        unknown = sum(b.quantity for b in changing if b.outcome == "failed")
        sold = sum(b.quantity for b in certain)
        ranges.append((start - sold - unknown, start - sold, start, None, certain))
    for base in bases:
        certain = [b for b in changing if b.outcome == "ok" and _before(base, b, skew)]
        unknown = sum(b.quantity for b in changing if not _before(b, base, skew) and not
                      (b.outcome == "ok" and _before(base, b, skew)))
        sold = sum(b.quantity for b in certain)
        ranges.append((base.stock - sold - unknown, base.stock - sold, base.stock, base, certain))
    if any(low <= final <= high for low, high, *_ in ranges):
        if any(low == final == high for low, high, *_ in ranges):
            return None, None
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        return (f"the final stock {final} lies within {low}..{high}, what buys and stock updates with unknown "
                f"outcome or overlapping order allow"), None
    low, high, level, base_record, certain = min(ranges, key=lambda r: r[0] - final if final < r[0] else final - r[1])
    sold = sum(b.quantity for b in certain)
    base_text = f"the stock update to {level}" if base_record is not None else "the start snapshot"
    allowed = f"{low}" if low == high else f"{low}..{high}"
    if final > high:
        size, detail = final - high, f"{final - high} units sold that the stock does not account for"
    else:
        size, detail = low - final, f"{low - final} units disappeared without a successful buy"
    message = (f"stock went {level} -> {final} (from {base_text}) but {sold} units were sold successfully "
               f"in {len(certain)} buys (the records allow a final stock of {allowed}): {detail}")
    evidence = ((base_record,) if base_record is not None else ()) + tuple(certain[-(MAX_EVIDENCE - 1):])
    return None, Violation(product, "conservation", message, evidence, size)
