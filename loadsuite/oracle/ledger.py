"""The per-process ledger: every buy and stock update of a run as a packed binary row (bounded memory).

Memory: 45 bytes a buy, 29 a stock update (start/end as float64, the product as an index into a per-ledger
name table, integers as int64, the outcome as a one-byte code), plus at most 1/8 growth slack; measured with
tracemalloc, under 55 bytes a record (tests/test_inventory_oracle.py asserts < 80; a tuple per record was
152-182 bytes). The default max_records 800000 holds at most about 36 MB per process. Product names are
stored once per product (the name a task passes comes from a parsed response, a new string each time).
Beyond max_records, records are dropped and their products listed in `dropped_products` (inconclusive).
"""
from __future__ import annotations

import struct
import sys
import time
from typing import Any

from .checks import BUY_OUTCOMES, STOCK_SET_OUTCOMES, BuyRecord, StockSetRecord

CHUNK_RECORDS = 20_000  # records per ZeroMQ message: about 1-2 MB of msgpack

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
