"""RunStats: counting, JSON-able snapshots, merging workers' snapshots, bounded key sets."""
from __future__ import annotations

import json

from loadsuite.runtime import custom_stats as run_stats
from loadsuite.runtime.custom_stats import OTHER, RunStats


def busy_stats() -> RunStats:
    stats = RunStats()
    stats.purchase(2)
    stats.purchase(3)
    stats.business_outcome("insufficient_stock")
    stats.business_outcome("empty_category")
    stats.business_outcome("empty_category")
    stats.stock_update()
    stats.validation_failure("status")
    stats.unexpected_status("Buy_Product", 500)
    stats.unexpected_status("Buy_Product", 500)
    return stats


def test_snapshot_counts_every_kind_and_is_json():
    snapshot = busy_stats().snapshot()
    assert snapshot == {
        "purchases": 2, "units_sold": 5, "insufficient_stock": 1, "stock_updates": 1,
        "business_outcomes": {"insufficient_stock": 1, "empty_category": 2},
        "validation_failures": {"status": 1},
        "unexpected_statuses": {"Buy_Product 500": 2},
    }
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_snapshot_is_a_copy():
    stats = busy_stats()
    snapshot = stats.snapshot()
    stats.validation_failure("status")
    assert snapshot["validation_failures"] == {"status": 1}


def test_merge_sums_another_process():
    master = busy_stats()
    master.merge(busy_stats().snapshot())
    snapshot = master.snapshot()
    assert (snapshot["purchases"], snapshot["units_sold"], snapshot["stock_updates"]) == (4, 10, 2)
    assert snapshot["insufficient_stock"] == 2
    assert snapshot["business_outcomes"] == {"insufficient_stock": 2, "empty_category": 4}
    assert snapshot["unexpected_statuses"] == {"Buy_Product 500": 4}


def test_merge_ignores_malformed_parts():
    stats = RunStats()
    stats.merge({"purchases": "7", "units_sold": -3, "stock_updates": True,
                 "validation_failures": {"status": 2, "json": "x"}, "business_outcomes": [1]})
    stats.merge(None)  # type: ignore[arg-type]
    assert stats.snapshot()["purchases"] == 0 and stats.units_sold == 0 and stats.stock_updates == 0
    assert stats.validation_failures == {"status": 2}


def test_drain_hands_over_and_resets():
    stats = busy_stats()
    drained = stats.drain()
    assert drained["purchases"] == 2
    assert stats.snapshot()["purchases"] == 0 and stats.validation_failures == {}


def test_keys_are_bounded_with_an_other_bucket():
    stats = RunStats()
    for i in range(run_stats.MAX_KEYS + 100):
        stats.validation_failure(f"check_{i}")
    stats.validation_failure("check_0")  # an existing key keeps counting on its own
    assert len(stats.validation_failures) == run_stats.MAX_KEYS
    assert stats.validation_failures["check_0"] == 2
    assert stats.validation_failures[OTHER] == 101
    assert sum(stats.validation_failures.values()) == run_stats.MAX_KEYS + 101


def test_merge_respects_the_bound():
    stats = RunStats()
    stats.merge({"unexpected_statuses": {f"R{i} 500": 1 for i in range(run_stats.MAX_KEYS * 2)}})
    assert len(stats.unexpected_statuses) == run_stats.MAX_KEYS
    assert sum(stats.unexpected_statuses.values()) == run_stats.MAX_KEYS * 2


def test_rows_list_every_counter():
    rows = busy_stats().rows()
    assert rows[:3] == [("purchases", "", 2), ("units_sold", "", 5), ("stock_updates", "", 1)]
    assert ("business_outcome", "empty_category", 2) in rows
    assert ("validation_failure", "status", 1) in rows
    assert ("unexpected_status", "Buy_Product 500", 2) in rows
    assert len(rows) == 7


def test_reset_clears_everything():
    stats = busy_stats()
    stats.reset()
    assert stats.snapshot() == RunStats().snapshot()


def test_module_singleton_exists():
    assert isinstance(run_stats.STATS, RunStats)
