"""Inventory-consistency oracle: record every buy and stock update, decide at the end whether stock was conserved.

Latency numbers let a service pass while it loses updates or oversells. The oracle records each buy and
stock update of a run (wall-clock start/end, product, outcome, remainingStock or "Available"), snapshots
the stock before traffic and after it, and checks every product. Three layers:

- `checks`: the pure core (records, `check`, `OracleResult`); imports nothing from Locust.
- `ledger`: the per-process `InventoryRecorder`, packed rows, bounded memory.
- `wiring`: the Locust listeners (snapshots, records from workers, `finalize`), attached by
  event_hooks.register().
"""
from .checks import (BUY_OUTCOMES, MAX_VIOLATIONS_LISTED, VIOLATION_KINDS, counts_text, STOCK_SET_OUTCOMES, BuyRecord, OracleResult, StockSetRecord, Violation, check,
                     parse_available, record_dict)
from .ledger import CHUNK_RECORDS, InventoryRecorder, PendingBuy, recorder, split_payload
from .wiring import MESSAGE_RECORDS, finalize, install, listeners, result

__all__ = ["BUY_OUTCOMES", "MAX_VIOLATIONS_LISTED", "VIOLATION_KINDS", "counts_text", "STOCK_SET_OUTCOMES", "BuyRecord", "OracleResult", "StockSetRecord", "Violation", "check",
           "parse_available", "record_dict", "CHUNK_RECORDS", "InventoryRecorder", "PendingBuy", "recorder",
           "split_payload", "MESSAGE_RECORDS", "finalize", "install", "listeners", "result"]
