"""Inventory-consistency oracle: record every buy and stock update, decide at the end whether stock was conserved.

Latency numbers let a service pass while it loses updates or oversells. This module records, cheaply and
with bounded memory, each buy and stock update of a run (wall-clock start/end, product, outcome,
remainingStock or "Available"), snapshots the stock before traffic and after it, and checks per product:

- conservation: from the last stock update that nothing overlapped (or from the start snapshot), the base
  minus the units of the successful buys after it equals the final stock;
- lost update: two successful buys with no possible stock update between them never report the same
  remainingStock (a correct store lowers the stock by at least one unit per buy);
- oversell / negative stock: no remainingStock or final stock below zero; no INSUFFICIENT_STOCK stating
  "Available: A" followed (with no stock update possibly between) by a successful buy of more than A.

Whatever overlaps make undecidable (concurrent stock updates, unknown outcomes, dropped records, a worker
that never reported, clock skew between load generators) is INCONCLUSIVE, never a violation and never a pass.

Layers: the pure core (`BuyRecord`, `StockSetRecord`, `check`, `OracleResult`) imports nothing from Locust;
`InventoryRecorder` is the per-process ledger; `install`/`finalize`/`result` wire it into Locust 2.47.
Importing this module registers nothing.

Contract for the locustfile (the lead's code):
- Tasks record into the process ledger `recorder()` AFTER each buy / stock update, also when the request
  was cut short: a user killed at the end of a run (stop_timeout reached, Ctrl-C) dies inside the request,
  so record in a `finally` (or use `recorder().buying(...)`), with outcome "failed" when no answer was read.
  Outcomes: buys "ok" | "insufficient" | "not_found" | "failed" (timeout, connection error, 5xx: may or may
  not have been applied); stock updates "ok" | "rejected" (any 4xx: certainly not applied) | "failed".
- Call `install(environment, config.oracle)` once per process from an `init` listener (runner exists).
- On the master or local runner, `finalize(environment)` returns the `OracleResult`; call it from the
  verdict's `quitting` listener. It is idempotent and blocking (bounded by report_timeout_s +
  stop_timeout + HTTP timeouts): it stops local users or asks workers for their records if that has not
  happened yet, fetches the final stock and runs `check`. `result(environment)` returns it without work.

Locust 2.47 event order this relies on (locust/runners.py, locust/main.py):
- test_start fires on the master (MasterRunner.start) before any spawn message goes out, on a local
  runner before users spawn, on a worker when its first spawn message arrives.
- Headless --run-time, a shape's end and Ctrl-C/SIGTERM all end in MasterRunner.quit(), which calls
  stop(send_stop_to_client=False): test_stop fires on the master WHILE WORKERS ARE STILL RUNNING; quit
  then sends "quit", sleeps 0.5 s and kills the master's greenlets (its message listener included), so a
  worker that needs longer to stop would lose its records. Hence the master's test_stop listener (or the
  first finalize) sends "oracle_flush": each worker stops its users (test_stop fires there) and sends its
  records ("oracle_records", chunked) and the master waits, bounded, for every worker it saw.
- Web UI stop / a shape's end without --headless use stop(send_stop_to_client=True): workers stop, fire
  test_stop (records go out first) and only then send client_stopped, so the records are there when
  test_stop fires on the master (messages from one worker arrive in order over ZeroMQ).
- main.shutdown() fires quitting (listeners in reverse registration order) BEFORE runner.quit(): on
  Ctrl-C/SIGTERM the users still run when the verdict's quitting listener calls finalize(), which stops
  them first. When the last worker quits by itself, test_stop runs inside the master's message loop:
  then the work moves to a separate greenlet so that loop keeps receiving records.
- Event listeners must not raise: Locust turns any exception in a listener into exit code 2.

Memory: the ledger stores each record as one packed binary row, not as Python objects: 45 bytes a buy,
29 a stock update (start/end as float64, the product as an index into a per-ledger name table, integers
as int64, the outcome as a one-byte code), plus at most 1/8 growth slack of its bytearray; measured with
tracemalloc, under 55 bytes a record (tests/test_inventory_oracle.py asserts < 80; a tuple per record was
152-182 bytes). The default max_records 800000 holds at most about 36 MB per process (hours of steady load). Product
names are stored once per product: the name a task passes comes from a parsed response, a new string
each time, which a record must not keep alive. The tuples exist only when records() or drain() builds
them at the end. The check of 300000 records over 20 products takes a few seconds on one core. Beyond
max_records, records are dropped and their products listed in `dropped_products` (inconclusive).
"""
from __future__ import annotations

import json
import logging
import re
import struct
import sys
import time
import urllib.error
import urllib.request
from bisect import bisect_left
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, NamedTuple

logger = logging.getLogger("inventory_oracle")

BUY_OUTCOMES = ("ok", "insufficient", "not_found", "failed")
STOCK_SET_OUTCOMES = ("ok", "failed", "rejected")
MESSAGE_RECORDS = "oracle_records"
MESSAGE_FLUSH = "oracle_flush"
CHUNK_RECORDS = 20_000  # records per ZeroMQ message: about 1-2 MB of msgpack
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


# The ledger ---------------------------------------------------------------------------------------

# One record is one fixed-width binary row: native byte order, standard sizes, no padding.
# Buy: start, end (float64), product (int32 index into the ledger's name table), quantity (int64), outcome
# (int8 code), remaining, available (int64; _NONE stands for None). Stock update: start, end, product, stock, outcome.
_BUY_ROW = struct.Struct("=ddiqbqq")  # 45 bytes
_SET_ROW = struct.Struct("=ddiqb")  # 29 bytes
_NONE = -2**63  # int64 minimum: None in remaining/available (the real value -2**63 is stored out of line)
_NOT_PACKABLE = object()  # struct refuses it, so the record takes the exact (out-of-line) path
_BUY_CODE = {outcome: code for code, outcome in enumerate(BUY_OUTCOMES)}
_SET_CODE = {outcome: code for code, outcome in enumerate(STOCK_SET_OUTCOMES)}
_UNPACKABLE = (KeyError, TypeError, OverflowError, struct.error)


class InventoryRecorder:
    """A bounded, append-only ledger of one process's buys and stock updates (hot path: one struct row appended).

    Records are packed rows in two bytearrays, 45 bytes a buy and 29 a stock update (plus the bytearray's
    growth slack, at most 1/8): no Python object per record. Product names go into a per-ledger name table
    (one string per product) and outcomes into small codes. A record whose fields do not fit (a new product
    name first, then: an outcome outside the contract, an integer beyond 64 bits, a non-number) is kept
    exactly as given in a side table, with a placeholder row. `records()` and `drain()` build the
    BuyRecord / StockSetRecord tuples and the payload rows only when called. Times come back as floats.

    Records from other processes (absorb) are kept per source, packed the same way, and are not bounded
    here: each worker already bounded its own.
    """

    __slots__ = ("max_records", "source", "_buys", "_sets", "_room", "dropped_products", "dropped_records",
                 "_foreign", "_index", "_names", "_odd_buys", "_odd_sets")

    def __init__(self, max_records: int = 800_000, source: str = "local") -> None:
        self.max_records = max_records
        self.source = source
        self._foreign: dict[str, InventoryRecorder] = {}
        self.dropped_products: set[str] = set()
        self.dropped_records = 0
        self._reset_own()

    def _reset_own(self) -> None:
        self._buys = bytearray()
        self._sets = bytearray()
        self._room = self.max_records
        # One string per product for all its records: the name a task passes comes from a parsed response,
        # a new string each time; the row keeps only its index here.
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self._odd_buys: dict[int, tuple] = {}  # row number -> the record as given, when it does not pack
        self._odd_sets: dict[int, tuple] = {}

    def buy(self, start: float, end: float, product: str, quantity: int, outcome: str,
            remaining: int | None = None, available: int | None = None) -> None:
        if self._room > 0:
            self._room -= 1
            try:
                self._buys += _BUY_ROW.pack(
                    start, end, self._index[product], quantity, _BUY_CODE[outcome],
                    _NONE if remaining is None else remaining if remaining != _NONE else _NOT_PACKABLE,
                    _NONE if available is None else available if available != _NONE else _NOT_PACKABLE)
            except _UNPACKABLE:
                self._buy_slow((start, end, product, quantity, outcome, remaining, available))
        else:
            self.dropped_records += 1
            self.dropped_products.add(product)

    def stock_set(self, start: float, end: float, product: str, stock: int, outcome: str) -> None:
        if self._room > 0:
            self._room -= 1
            try:
                self._sets += _SET_ROW.pack(start, end, self._index[product], stock, _SET_CODE[outcome])
            except _UNPACKABLE:
                self._set_slow((start, end, product, stock, outcome))
        else:
            self.dropped_records += 1
            self.dropped_products.add(product)

    def _name_index(self, product) -> int:
        index = self._index.get(product)
        if index is None:
            index = self._index[product] = len(self._names)
            self._names.append(product)
        return index

    def _buy_slow(self, row: tuple) -> None:
        """A buy the hot path could not pack: a new product name (then packed), or fields kept exactly."""
        start, end, product, quantity, outcome, remaining, available = row
        try:
            if remaining == _NONE or available == _NONE:
                raise TypeError("the None sentinel as a value")
            packed = _BUY_ROW.pack(start, end, self._name_index(product), quantity, _BUY_CODE[outcome],
                                   _NONE if remaining is None else remaining, _NONE if available is None else available)
        except _UNPACKABLE:
            self._odd_buys[len(self._buys) // _BUY_ROW.size] = row
            packed = bytes(_BUY_ROW.size)
        self._buys += packed

    def _set_slow(self, row: tuple) -> None:
        start, end, product, stock, outcome = row
        try:
            packed = _SET_ROW.pack(start, end, self._name_index(product), stock, _SET_CODE[outcome])
        except _UNPACKABLE:
            self._odd_sets[len(self._sets) // _SET_ROW.size] = row
            packed = bytes(_SET_ROW.size)
        self._sets += packed

    def buying(self, product: str, quantity: int) -> "PendingBuy":
        """`with recorder.buying(name, q) as buy: ...; buy.done(kind, remaining, available)`: records
        outcome "failed" if the block exits without done() (timeout, exception, the user being killed)."""
        return PendingBuy(self, product, quantity)

    def _own_len(self) -> int:
        return len(self._buys) // _BUY_ROW.size + len(self._sets) // _SET_ROW.size

    def __len__(self) -> int:
        return self._own_len() + sum(ledger._own_len() for ledger in self._foreign.values())

    def configure(self, max_records: int | None = None, source: str | None = None) -> None:
        """Set the bound and this process's source name; clears everything."""
        if max_records is not None:
            self.max_records = max_records
        if source is not None:
            self.source = source
        self.clear()

    def clear(self) -> None:
        self._reset_own()
        self._foreign = {}
        self.dropped_products = set()
        self.dropped_records = 0

    def _rows(self) -> tuple[list[tuple], list[tuple]]:
        """This ledger's own records as plain tuples (without their source), in recording order."""
        names, none, buy_outcomes, set_outcomes = self._names, _NONE, BUY_OUTCOMES, STOCK_SET_OUTCOMES
        buys = [(start, end, names[product], quantity, buy_outcomes[outcome],
                 None if remaining == none else remaining, None if available == none else available)
                for start, end, product, quantity, outcome, remaining, available in _BUY_ROW.iter_unpack(self._buys)]
        sets = [(start, end, names[product], stock, set_outcomes[outcome])
                for start, end, product, stock, outcome in _SET_ROW.iter_unpack(self._sets)]
        for number, row in self._odd_buys.items():
            buys[number] = row
        for number, row in self._odd_sets.items():
            sets[number] = row
        return buys, sets

    def records(self) -> tuple[list[BuyRecord], list[StockSetRecord]]:
        """Every record held (own and absorbed), as BuyRecord / StockSetRecord with their sources."""
        buys: list[BuyRecord] = []
        sets: list[StockSetRecord] = []
        for source, ledger in ((self.source, self), *self._foreign.items()):
            own_buys, own_sets = ledger._rows()
            buys += [BuyRecord(*row, source) for row in own_buys]
            sets += [StockSetRecord(*row, source) for row in own_sets]
        return buys, sets

    def drain(self) -> dict[str, Any]:
        """This process's own records as a JSON/msgpack-able payload; the ledger starts empty again.

        "buys" rows are (start, end, product, quantity, outcome, remaining, available), "stock_sets" rows
        (start, end, product, stock, outcome): built here, from the packed rows.
        """
        buys, sets = self._rows()
        payload = {"source": self.source, "buys": buys, "stock_sets": sets,
                   "dropped_products": sorted(self.dropped_products), "dropped_records": self.dropped_records}
        self._reset_own()
        self.dropped_products = set()
        self.dropped_records = 0
        return payload

    def absorb(self, payload: dict[str, Any], source: str | None = None) -> None:
        """Add a payload (or one chunk of it) from drain(), keeping its source for clock-skew handling."""
        source = source or payload.get("source") or "unknown"
        ledger = self._foreign.get(source)
        if ledger is None:
            ledger = self._foreign[source] = InventoryRecorder(max_records=sys.maxsize, source=source)
        for row in payload.get("buys", ()):
            ledger.buy(*row)
        for row in payload.get("stock_sets", ()):
            ledger.stock_set(*row)
        self.dropped_products.update(payload.get("dropped_products", ()))
        self.dropped_records += int(payload.get("dropped_records", 0))


class PendingBuy:
    """One buy in flight; see InventoryRecorder.buying."""

    __slots__ = ("_recorder", "product", "quantity", "start", "_done")

    def __init__(self, recorder: InventoryRecorder, product: str, quantity: int) -> None:
        self._recorder, self.product, self.quantity = recorder, product, quantity
        self.start = time.time()
        self._done = False

    def __enter__(self) -> "PendingBuy":
        return self

    def done(self, outcome: str, remaining: int | None = None, available: int | None = None) -> None:
        if not self._done:
            self._done = True
            self._recorder.buy(self.start, time.time(), self.product, self.quantity, outcome, remaining, available)

    def __exit__(self, *exc_info) -> None:
        self.done("failed")


def split_payload(payload: dict[str, Any], chunk_records: int = CHUNK_RECORDS) -> list[dict[str, Any]]:
    """Cut a drain() payload into chunks of at most chunk_records records each (at least one chunk)."""
    rows = [("buys", r) for r in payload["buys"]] + [("stock_sets", r) for r in payload["stock_sets"]]
    chunks = []
    for offset in range(0, max(len(rows), 1), chunk_records):
        part = rows[offset:offset + chunk_records]
        chunk = {"source": payload["source"], "buys": [r for k, r in part if k == "buys"],
                 "stock_sets": [r for k, r in part if k == "stock_sets"],
                 "dropped_products": payload["dropped_products"] if offset == 0 else [],
                 "dropped_records": payload["dropped_records"] if offset == 0 else 0}
        chunks.append(chunk)
    return chunks


_LEDGER = InventoryRecorder()


def recorder(environment=None) -> InventoryRecorder:
    """This process's ledger (one per process; install() sets its bound and source name)."""
    return _LEDGER


# Stock snapshots ----------------------------------------------------------------------------------

def fetch_stock(base_url: str | None, timeout_s: float = 5.0, attempts: int = 3) -> tuple[dict[str, int] | None, str | None]:
    """GET {base_url}/products outside Locust's statistics: ({name: stock}, None) or (None, reason)."""
    if not base_url:
        return None, "no host known (give --host)"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    reason = "not tried"
    for attempt in range(attempts):
        try:
            with opener.open(f"{base_url.rstrip('/')}/products", timeout=timeout_s) as response:
                body = json.loads(response.read())
            products = body["data"]
            stock = {p["name"]: p["stock"] for p in products}
            if any(type(v) is not int for v in stock.values()):
                return None, "GET /products returned a non-integer stock"
            return stock, None
        except urllib.error.HTTPError as error:
            reason = f"GET /products answered {error.code}"
        except (OSError, ValueError) as error:
            reason = f"GET /products: {error.__class__.__name__}: {error}"
        except (KeyError, TypeError):
            return None, "GET /products: unexpected body (no data list of products with name and stock)"
        if attempt + 1 < attempts:
            time.sleep(0.2)
    return None, reason


# Locust wiring ------------------------------------------------------------------------------------

class _RunState:
    """What the oracle knows about the current test run in this process."""

    def __init__(self, config, base_url_provider, report_timeout_s: float, http_timeout_s: float) -> None:
        self.config = config
        self.base_url_provider = base_url_provider
        self.report_timeout_s = report_timeout_s
        self.http_timeout_s = http_timeout_s
        self.reset()

    def reset(self) -> None:
        self.started = False
        self.start_stock: dict[str, int] | None = None
        self.start_error: str | None = None
        self.expected_workers: set[str] = set()
        self.reported_workers: set[str] = set()
        self.late_records = 0
        self.result: OracleResult | None = None
        self.busy_in = None  # the greenlet computing the result
        self.done = None  # gevent Event, set when the result is ready


def _role(runner) -> str:
    from locust.runners import LocalRunner, MasterRunner, WorkerRunner
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    if isinstance(runner, LocalRunner):
        return "local"
    return "none"


def _state(environment) -> _RunState | None:
    return getattr(environment, "inventory_oracle_state", None)


def install(environment, config, base_url_provider: Callable[[], str | None] | None = None,
            report_timeout_s: float = 10.0, http_timeout_s: float = 5.0) -> None:
    """Register the oracle's listeners and messages on this Locust environment (once per process).

    config is config_loader.OracleConfig (enabled, max_records, clock_skew_ms). base_url_provider gives the
    service URL for the snapshots; default: environment.host, else the first user class's host.
    """
    if _state(environment) is not None:
        return
    state = _RunState(config, base_url_provider, report_timeout_s, http_timeout_s)
    environment.inventory_oracle_state = state
    environment.oracle_result = None
    _LEDGER.configure(max_records=config.max_records)
    if not config.enabled:
        return
    events = environment.events
    events.test_start.add_listener(lambda environment, **_kw: _guard(_on_test_start, environment))
    events.test_stop.add_listener(lambda environment, **_kw: _guard(_on_test_stop, environment))
    events.quitting.add_listener(lambda environment, **_kw: _guard(_on_quitting, environment))
    if environment.runner is not None:
        _attach(environment)
    else:
        events.init.add_listener(lambda environment, **_kw: _guard(_attach, environment))


def finalize(environment, timeout_s: float | None = None) -> OracleResult | None:
    """The run's OracleResult on the master or local runner, computed once (stop users, collect, fetch, check).

    Returns None when the oracle is not installed or disabled, or (only) when called re-entrantly while
    this same greenlet is computing it.
    """
    state = _state(environment)
    if state is None or not state.config.enabled:
        return None
    if state.result is not None:
        return state.result
    import gevent
    from gevent.event import Event
    current = gevent.getcurrent()
    if state.busy_in is not None:
        if state.busy_in is current:
            return None
        state.done.wait(timeout=timeout_s)
        return state.result
    state.busy_in, state.done = current, Event()
    try:
        result = _compute(environment, state)
    except Exception as error:  # never take the run down: report the oracle itself as undecided
        logger.exception("inventory oracle failed")
        result = OracleResult.undecided(f"the oracle failed: {error.__class__.__name__}: {error}")
    state.result = result
    environment.oracle_result = result
    state.busy_in = None
    state.done.set()
    logger.info("%s", result.summary_line())
    return result


def result(environment) -> OracleResult | None:
    """The result finalize() computed for the current run, or None if not (yet) computed."""
    state = _state(environment)
    return state.result if state is not None else None


def _guard(function, environment) -> None:
    """Run a listener; an exception escaping a Locust listener would set exit code 2."""
    try:
        function(environment)
    except Exception:
        logger.exception("inventory oracle: %s failed", function.__name__)


def _attach(environment) -> None:
    runner = environment.runner
    role = _role(runner)
    if role == "worker":
        _LEDGER.configure(source=runner.client_id)
        runner.register_message(MESSAGE_FLUSH, _on_flush_request, concurrent=True)
    elif role == "master":
        _LEDGER.configure(source="master")
        runner.register_message(MESSAGE_RECORDS, _on_records)
        environment.events.worker_report.add_listener(
            lambda client_id, data, **_kw: _saw_worker(environment, client_id))
    else:
        _LEDGER.configure(source="local")


def _base_url(environment, state: _RunState) -> str | None:
    if state.base_url_provider is not None:
        return state.base_url_provider()
    if environment.host:
        return environment.host
    return next((c.host for c in environment.user_classes if getattr(c, "host", None)), None)


def _on_test_start(environment) -> None:
    state = _state(environment)
    state.reset()
    _LEDGER.clear()
    state.started = True
    role = _role(environment.runner)
    if role == "worker":
        return
    if role == "master":
        state.expected_workers = set(environment.runner.clients)
    state.start_stock, state.start_error = fetch_stock(_base_url(environment, state), state.http_timeout_s)
    if state.start_error:
        logger.warning("inventory oracle: start snapshot failed: %s", state.start_error)


def _on_test_stop(environment) -> None:
    role = _role(environment.runner)
    if role == "worker":
        _send_records(environment)
    elif role in ("master", "local"):
        if _in_message_loop():
            import gevent
            gevent.spawn(finalize, environment)  # the loop must keep receiving worker records
        else:
            finalize(environment)


def _on_quitting(environment) -> None:
    runner = environment.runner
    role = _role(runner)
    if role == "worker":
        from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED
        if runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
            runner.stop()  # test_stop sends the records before WorkerRunner tells the master it quits
    elif role in ("master", "local") and _state(environment).started:
        finalize(environment)


def _in_message_loop() -> bool:
    """True inside MasterRunner.client_listener (the last worker quit): blocking there would starve it."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "client_listener" and "locust" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _send_records(environment) -> None:
    """Worker: ship every record to the master, the last chunk marked final."""
    chunks = split_payload(_LEDGER.drain())
    for number, chunk in enumerate(chunks):
        chunk["final"] = number == len(chunks) - 1
        environment.runner.send_message(MESSAGE_RECORDS, chunk)


def _on_flush_request(environment, msg, **_kw) -> None:
    """Worker, asked by the master at the end: stop the users (test_stop sends the records) or resend the final mark."""
    from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED, STATE_STOPPING
    try:
        runner = environment.runner
        deadline = time.monotonic() + (environment.stop_timeout or 0) + 5
        while runner.state in (STATE_CLEANUP, STATE_STOPPING) and time.monotonic() < deadline:
            time.sleep(0.05)  # another greenlet is stopping the users; its test_stop sends the records
        if runner.state not in (STATE_INIT, STATE_STOPPED):
            runner.stop()
            if runner.state == STATE_STOPPED:
                return
        _send_records(environment)
    except Exception:
        logger.exception("inventory oracle: flush failed")


def _on_records(environment, msg, **_kw) -> None:
    """Master: absorb one chunk of a worker's records."""
    state = _state(environment)
    data = msg.data or {}
    if state.result is not None:
        state.late_records += len(data.get("buys", ())) + len(data.get("stock_sets", ()))
        logger.warning("inventory oracle: records from %s arrived after the check", msg.node_id)
        return
    _LEDGER.absorb(data, source=msg.node_id)
    state.expected_workers.add(msg.node_id)
    if data.get("final"):
        state.reported_workers.add(msg.node_id)


def _saw_worker(environment, client_id: str) -> None:
    state = _state(environment)
    if state is not None and state.started and state.result is None:
        state.expected_workers.add(client_id)


def _stop_local(environment) -> None:
    from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED
    runner = environment.runner
    if runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
        runner.stop()
    deadline = time.monotonic() + (environment.stop_timeout or 0) + 5
    while runner.state == STATE_CLEANUP and time.monotonic() < deadline:
        time.sleep(0.05)


def _collect_from_workers(environment, state: _RunState) -> list[str]:
    """Master: ask every worker that has not reported yet, wait (bounded); the ones that never answer.

    Workers Locust marked missing (no heartbeat) or already removed cannot answer: they are not waited for.
    """
    from locust.runners import STATE_MISSING
    runner = environment.runner
    state.expected_workers |= set(runner.clients)
    connected = {client.id for client in runner.clients.all if client.state != STATE_MISSING}
    if connected - state.reported_workers:
        runner.send_message(MESSAGE_FLUSH, None)
    deadline = time.monotonic() + state.report_timeout_s + (environment.stop_timeout or 0)
    while connected - state.reported_workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(state.expected_workers - state.reported_workers)


def _compute(environment, state: _RunState) -> OracleResult:
    if not state.started:
        return OracleResult.undecided("no test ran")
    role = _role(environment.runner)
    missing: list[str] = []
    if role == "local":
        _stop_local(environment)
    elif role == "master":
        missing = [f"worker {w}" for w in _collect_from_workers(environment, state)]
    final_stock, final_error = fetch_stock(_base_url(environment, state), state.http_timeout_s)
    buys, sets = _LEDGER.records()
    return check(state.start_stock, final_stock, buys, sets, state.config.clock_skew_ms / 1000.0,
                 _LEDGER.dropped_products, missing, state.start_error, final_error, _LEDGER.dropped_records)
