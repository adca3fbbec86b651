"""Inventory-consistency oracle: record every buy and stock update, decide at the end whether stock was conserved.

Latency numbers let a service pass while it loses updates or oversells. The oracle records each buy and
stock update of a run (wall-clock start/end, product, outcome, remainingStock or "Available"), snapshots
the stock before traffic and after it, and checks every product. Three layers:

- `checks`: the pure core (records, `check`, `OracleResult`); imports nothing from Locust.
- `ledger`: the per-process `InventoryRecorder`, packed rows, bounded memory.
- `wiring`: the Locust listeners (snapshots, records from workers, `finalize`), attached by
  event_hooks.register(); imported on first use (it imports Locust).
"""
from .checks import (BUY_OUTCOMES, MAX_VIOLATIONS_LISTED, VIOLATION_KINDS, counts_text, STOCK_SET_OUTCOMES, BuyRecord, OracleResult, StockSetRecord, Violation, check,
                     stock_update_outcome, record_dict)
from .ledger import CHUNK_RECORDS, InventoryRecorder, PendingBuy, recorder, split_payload

_WIRING = {"MESSAGE_RECORDS", "finalize", "install", "listeners", "reset", "result"}


def __getattr__(name: str):
    """`wiring` imports Locust (gevent's monkey-patching, about half a second): only what uses it loads it, so
    the verdict and aftermath commands, which read `checks` only, start quickly."""
    if name in _WIRING:
        from . import wiring
        return getattr(wiring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["BUY_OUTCOMES", "MAX_VIOLATIONS_LISTED", "VIOLATION_KINDS", "counts_text", "STOCK_SET_OUTCOMES", "BuyRecord", "OracleResult", "StockSetRecord", "Violation", "check",
           "stock_update_outcome", "record_dict", "CHUNK_RECORDS", "InventoryRecorder", "PendingBuy", "recorder",
           "split_payload", "MESSAGE_RECORDS", "finalize", "install", "listeners", "reset", "result"]
