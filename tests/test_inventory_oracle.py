"""The inventory oracle on hand-built histories, its bounded ledger, and its Locust wiring on a real service."""
from __future__ import annotations

import locust  # noqa: F401 - gevent monkey-patching first, exactly as in a real run
import json
import random
import time
import tracemalloc

import gevent
import msgpack
import pytest
from locust import FastHttpUser, constant, task
from locust.env import Environment

from loadsuite import oracle
from loadsuite.config import OracleConfig
from loadsuite.oracle import BuyRecord, InventoryRecorder, StockSetRecord, check
from loadsuite.runtime.attach import attach_listeners
from loadsuite.transport.service_client import ServiceClient, snapshot_stock
from validators import parse_insufficient_stock
from tests.conftest import free_port

P = "Cookbook: Global Cuisine"


def buy(start, end, quantity, outcome="ok", remaining=None, available=None, product=P, source="w1"):
    return BuyRecord(start, end, product, quantity, outcome, remaining, available, source)


def stock(start, end, value, outcome="ok", product=P, source="w1"):
    return StockSetRecord(start, end, product, value, outcome, source)


def kinds(result):
    return sorted({v.kind for v in result.violations})


def reasons(result):
    return dict(result.inconclusive)


# Clean histories ----------------------------------------------------------------------------------

def test_serial_history_of_a_correct_store_passes():
    buys = [buy(1, 2, 5, remaining=95), buy(3, 4, 3, remaining=92), buy(9, 10, 2, remaining=48),
            buy(11, 12, 60, "insufficient", available=48), buy(13, 14, 1, "not_found")]
    result = check({P: 100}, {P: 48}, buys, [stock(5, 6, 50), stock(7, 8, 0, "rejected")])
    assert result.passed is True
    assert result.products_checked == 1 and not result.inconclusive and not result.violations
    assert result.to_dict()["passed"] is True


def test_products_without_records_are_checked_against_the_snapshots():
    result = check({"a": 10, "b": 7}, {"a": 10, "b": 7}, [], [])
    assert result.passed is True and result.products_checked == 2


def test_same_remaining_across_a_restock_is_not_a_lost_update():
    buys = [buy(1, 2, 1, remaining=49), buy(5, 6, 1, remaining=49)]
    result = check({P: 50}, {P: 49}, buys, [stock(3, 4, 50)])
    assert result.passed is True


# Violations ---------------------------------------------------------------------------------------

def test_more_units_sold_than_the_stock_lost_is_a_conservation_violation():
    buys = [buy(1, 2, 10, remaining=190), buy(3, 4, 10, remaining=182), buy(5, 6, 5, remaining=175)]
    result = check({P: 200}, {P: 180}, buys, [])
    assert result.passed is False and kinds(result) == ["conservation"]
    message = result.violations[0].message
    assert "200 -> 180" in message and "25 units were sold" in message
    assert "5 units sold that the stock does not account for" in message
    assert len(result.violations[0].to_dict()["evidence"]) == 3


def test_stock_that_vanished_without_a_buy_is_a_conservation_violation():
    result = check({P: 100}, {P: 90}, [buy(1, 2, 4, remaining=96)], [])
    assert kinds(result) == ["conservation"]
    assert "6 units disappeared without a successful buy" in result.violations[0].message


def test_conservation_counts_from_the_last_clean_stock_update():
    buys = [buy(1, 2, 5, remaining=95), buy(5, 6, 2, remaining=18), buy(7, 8, 2, remaining=16)]
    good = check({P: 100}, {P: 16}, buys, [stock(3, 4, 20)])
    bad = check({P: 100}, {P: 18}, buys, [stock(3, 4, 20)])
    assert good.passed is True
    assert bad.passed is False and "stock went 20 -> 18" in bad.violations[0].message
    assert bad.violations[0].to_dict()["evidence"][0]["request"] == "stock update"


def test_two_overlapping_buys_reporting_the_same_remaining_are_a_lost_update():
    buys = [buy(1.0, 1.2, 1, remaining=99), buy(1.1, 1.3, 1, remaining=99)]
    result = check({P: 100}, {P: 99}, buys, [])
    assert result.passed is False
    assert kinds(result) == ["conservation", "lost_update"]
    lost = next(v for v in result.violations if v.kind == "lost_update")
    assert "remainingStock 99" in lost.message
    assert [e["remaining"] for e in lost.to_dict()["evidence"]] == [99, 99]


def test_lost_update_is_found_even_when_a_later_restock_hides_it_from_conservation():
    buys = [buy(1.0, 1.2, 1, remaining=99), buy(1.1, 1.3, 1, remaining=99)]
    result = check({P: 100}, {P: 30}, buys, [stock(2, 3, 30)])
    assert kinds(result) == ["lost_update"]


def test_a_stock_update_that_may_come_between_two_buys_makes_the_pair_undecidable():
    buys = [buy(1.0, 1.2, 1, remaining=49), buy(1.1, 1.5, 1, remaining=49)]
    result = check({P: 100}, {P: 49}, buys, [stock(1.3, 1.4, 50)])
    assert "lost_update" not in kinds(result)


def test_buying_more_than_an_earlier_insufficient_answer_allowed_is_an_oversell():
    buys = [buy(1, 2, 5, "insufficient", available=2), buy(3, 4, 3, remaining=-1)]
    result = check(None, None, buys, [])
    assert "oversell" in kinds(result) and "negative_stock" in kinds(result)
    oversell = next(v for v in result.violations if v.kind == "oversell")
    assert "only 2 were available" in oversell.message and "1 units oversold" in oversell.message
    assert oversell.units == 1 and result.units["oversell"] == 1


def test_oversell_without_negative_stock_is_still_found():
    buys = [buy(1, 2, 5, "insufficient", available=2), buy(3, 4, 3, remaining=0)]
    result = check({P: 2}, {P: 0}, buys, [])
    assert "oversell" in kinds(result)


def test_a_restock_between_insufficient_and_a_larger_buy_is_no_oversell():
    buys = [buy(1, 2, 5, "insufficient", available=2), buy(5, 6, 3, remaining=7)]
    assert check({P: 2}, {P: 7}, buys, [stock(3, 4, 10)]).passed is True
    overlapping = check({P: 2}, None, buys, [stock(1.5, 5.5, 10)])
    assert "oversell" not in kinds(overlapping)


def test_confirmed_buys_beyond_the_stock_are_an_oversell_whatever_else_is_unknown():
    # The run: stock 200, no stock update, 737 confirmed single-unit buys, 3,307 buys answered 500.
    confirmed = [buy(1 + i * 0.01, 1.005 + i * 0.01, 1, remaining=max(0, 199 - i % 200)) for i in range(737)]
    unknown = [buy(1.002 + i * 0.002, 1.2 + i * 0.002, 1, "failed") for i in range(3307)]
    result = check({P: 200}, {P: 0}, confirmed + unknown, [])
    assert result.passed is False
    [oversell] = [v for v in result.violations if v.kind == "oversell"]
    assert oversell.units == 537 and "537 units oversold" in oversell.message
    assert "737 units were confirmed sold" in oversell.message and "start snapshot showed 200" in oversell.message
    assert result.counts["oversell"] == 1 and result.units["oversell"] == 537
    assert result.to_dict()["violation_counts"]["oversell"] == 1
    # Conservation: the final stock 0 lies far above what 737 confirmed buys allow (200 - 737 - 0..3307).
    [conservation] = [v for v in result.violations if v.kind == "conservation"]
    assert conservation.units == 537


def test_every_restock_that_could_come_between_raises_the_oversell_bound():
    buys = [buy(10 + i, 10.5 + i, 1, remaining=0) for i in range(30)]  # 30 units confirmed from t=10 on
    restocks = [stock(5, 6, 10), stock(20.2, 20.4, 5, "failed")]  # 10 set before any buy; 5 more may come
    result = check({P: 3}, None, buys, restocks)
    [oversell] = [v for v in result.violations if v.kind == "oversell"]
    # From the stock update to 10: 30 units sold, at most 10 + 5 available: 15 oversold.
    assert oversell.units == 15 and "plus at most 5 units restocked" in oversell.message
    enough = check({P: 3}, None, buys, [stock(5, 6, 10), stock(20.2, 20.4, 20, "failed")])
    assert "oversell" not in kinds(enough)


def test_a_restock_overlapping_the_buys_counts_as_possibly_between():
    buys = [buy(1, 2, 3, remaining=0), buy(3, 4, 3, remaining=0)]
    result = check({P: 3}, None, buys, [stock(3.5, 5, 3)])
    assert "oversell" not in kinds(result)
    assert check({P: 3}, None, buys, [stock(4.5, 5, 3)]).units.get("oversell") == 3


def test_negative_remaining_and_negative_final_stock_are_violations():
    result = check({P: 1}, {P: -2}, [buy(1, 2, 3, remaining=-2)], [])
    assert [v.kind for v in result.violations].count("negative_stock") == 2
    assert any("final stock is -2" in v.message for v in result.violations)


# Inconclusive -------------------------------------------------------------------------------------

# Each history with the final stocks a correct store could end with (a wide interval: inconclusive),
# and one it could not (outside the interval: a conservation violation by the size of the gap).
UNDECIDABLE = [
    # a buy after the start snapshot with an unknown outcome: 10 - 1 - (0 or 1)
    ([buy(1, 2, 1, remaining=9), buy(3, 4, 1, "failed")], [], (8, 9), 5, 3),
    # an unknown stock update: 10 - 1 = 9 if it was not applied, 20 if it was
    ([buy(1, 2, 1, remaining=9)], [stock(3, 4, 20, "failed")], (9, 20), 8, 1),
    # two overlapping stock updates: either could be the last
    ([buy(1, 2, 1, remaining=9)], [stock(3, 5, 20), stock(4, 6, 30)], (20, 30), 25, 5),
    # a successful buy overlapping the last stock update may come before or after it
    ([buy(1, 2, 1, remaining=9), buy(3.5, 4.5, 1, remaining=19)], [stock(3, 4, 20)], (19, 20), 15, 4),
    # a buy with unknown outcome overlapping the last stock update
    ([buy(1, 2, 1, remaining=9), buy(2.9, 3.1, 1, "failed")], [stock(3, 4, 20)], (19, 20), 22, 2),
]


@pytest.mark.parametrize("buys, sets, possible, impossible, gap", UNDECIDABLE)
def test_every_final_stock_a_correct_store_could_reach_is_no_violation(buys, sets, possible, impossible, gap):
    for final in possible:
        result = check({P: 10}, {P: final}, buys, sets)
        assert not result.violations and result.passed in (True, None), (final, result)


@pytest.mark.parametrize("buys, sets, possible, impossible, gap", UNDECIDABLE)
def test_a_final_stock_outside_the_interval_is_a_conservation_violation_by_the_gap(buys, sets, possible, impossible, gap):
    result = check({P: 10}, {P: impossible}, buys, sets)
    assert result.passed is False and kinds(result) == ["conservation"]
    violation = result.violations[0]
    assert violation.units == gap and violation.to_dict()["units"] == gap
    assert f"{gap} units" in violation.message and result.counts == {"conservation": 1}


def test_unknown_outcomes_widen_the_interval_by_their_units():
    buys = [buy(1, 2, 2, remaining=8), buy(3, 4, 3, "failed"), buy(5, 6, 4, "failed")]
    for final in range(1, 9):  # 10 - 2 - (0..7)
        result = check({P: 10}, {P: final}, buys, [])
        assert not result.violations and result.passed is None, final
        assert "lies within 1..8" in reasons(result)[P]
    too_high = check({P: 10}, {P: 9}, buys, [])
    assert too_high.passed is False and too_high.violations[0].units == 1
    assert "1 units sold that the stock does not account for" in too_high.violations[0].message
    too_low = check({P: 10}, {P: 0}, buys, [])
    assert too_low.violations[0].units == 1 and "1 units disappeared" in too_low.violations[0].message


def test_a_failed_buy_before_a_clean_restock_does_not_matter():
    buys = [buy(1, 2, 1, "failed"), buy(5, 6, 2, remaining=18)]
    assert check({P: 10}, {P: 18}, buys, [stock(3, 4, 20)]).passed is True


def test_missing_start_snapshot_is_inconclusive_unless_a_clean_update_gives_the_base():
    failed = check(None, {P: 9}, [buy(1, 2, 1, remaining=9)], [], start_error="connection refused")
    assert failed.passed is None
    assert reasons(failed)[P] == "start snapshot failed: connection refused"
    assert "start snapshot failed: connection refused" in failed.notes
    rebased = check(None, {P: 19}, [buy(1, 2, 1, remaining=9), buy(5, 6, 1, remaining=19)], [stock(3, 4, 20)])
    assert rebased.passed is True


def test_missing_final_stock_and_unknown_products_are_inconclusive():
    result = check({P: 10}, None, [buy(1, 2, 1, remaining=9)], [], final_error="timed out")
    assert reasons(result)[P] == "final snapshot failed: timed out" and result.passed is None
    other = check({P: 10}, {P: 10, "New": 3}, [], [])
    assert reasons(other)["New"] == "not in the start stock snapshot"
    assert other.passed is True  # P was decided


def test_buys_of_a_product_that_does_not_exist_are_ignored():
    result = check({P: 10}, {P: 10}, [buy(1, 2, 1, "not_found", product="Ghost")], [])
    assert result.products_checked == 1 and result.passed is True


def test_dropped_records_make_their_product_inconclusive():
    result = check({P: 10, "b": 5}, {P: 10, "b": 5}, [], [], dropped_products={"b"}, dropped_records=3)
    assert reasons(result) == {"b": "records dropped (more than oracle.max_records)"}
    assert result.passed is True and result.to_dict()["dropped_records"] == 3


def test_a_worker_that_did_not_report_leaves_only_negative_stock_decidable():
    buys = [buy(1.0, 1.2, 1, remaining=99), buy(1.1, 1.3, 1, remaining=99)]
    result = check({P: 100}, {P: 99}, buys, [], missing_sources=["worker w2"])
    assert result.passed is None and not result.violations
    assert "worker w2 did not report: results inconclusive" in result.notes
    negative = check({P: 100}, {P: 99}, [buy(1, 2, 1, remaining=-1)], [], missing_sources=["worker w2"])
    assert kinds(negative) == ["negative_stock"] and negative.passed is False


def test_nothing_to_check_is_inconclusive():
    result = check({}, {}, [], [])
    assert result.passed is None and result.products_checked == 0


# Clock skew ---------------------------------------------------------------------------------------

def test_skewed_clocks_of_two_workers_give_inconclusive_not_a_false_violation():
    # True order: the buy (99 left) lands before the restock to 50, so 50 is correct. Worker w1's clock
    # runs 40 ms ahead, so its buy appears to start after w2's restock ended.
    buy_w1 = buy(1.040, 1.060, 1, remaining=99, source="w1")
    restock_w2 = stock(1.000, 1.030, 50, source="w2")
    naive = check({P: 100}, {P: 50}, [buy_w1], [restock_w2], clock_skew_s=0.0)
    assert naive.passed is False  # what a skew-blind oracle would wrongly claim
    result = check({P: 100}, {P: 50}, [buy_w1], [restock_w2], clock_skew_s=0.05)
    assert result.passed is None and not result.violations
    assert "lies within 49..50" in reasons(result)[P]


def test_skewed_restock_near_two_equal_remainings_is_no_lost_update():
    buys = [buy(1.000, 1.010, 1, remaining=49, source="w1"), buy(1.100, 1.110, 1, remaining=49, source="w1")]
    restock = stock(1.120, 1.130, 50, source="w2")  # really between the two buys, its clock is behind
    assert "lost_update" in kinds(check(None, None, buys, [restock], clock_skew_s=0.0))
    assert "lost_update" not in kinds(check(None, None, buys, [restock], clock_skew_s=0.05))


def test_records_of_one_process_are_compared_without_skew():
    buys = [buy(1.000, 1.010, 1, remaining=99), buy(1.020, 1.030, 1, remaining=98)]
    assert check({P: 100}, {P: 98}, buys, [stock(0.990, 0.999, 100)], clock_skew_s=1.0).passed is True


# Result shape -------------------------------------------------------------------------------------

def test_result_dict_matches_the_summary_consistency_object():
    result = check({P: 100, "b": 1}, {P: 99, "b": 1}, [buy(1, 2, 1, remaining=99), buy(1.5, 2.5, 1, remaining=99)], [])
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) >= {"enabled", "passed", "products_checked", "inconclusive", "violations", "dropped_records"}
    assert data["enabled"] is True and data["passed"] is False and data["products_checked"] == 2
    assert data["inconclusive"] == 0 and data["violations_total"] == len(data["violations"]) == 2
    evidence = data["violations"][0]["evidence"][0]
    assert evidence["start"].startswith("1970-01-01T00:00:01") and evidence["source"] == "w1"
    assert "FAILED" in result.summary_line() and "lost_update x1" in result.summary_line()


def test_many_violations_are_capped_but_counted():
    products = {f"p{i}": 10 for i in range(30)}
    buys = [buy(1, 2, 1, remaining=9, product=p) for p in products]
    buys += [buy(1.5, 2.5, 1, remaining=9, product=p) for p in products]
    result = check(products, {p: 9 for p in products}, buys, [])
    assert result.violations_total == 60 and len(result.violations) == oracle.MAX_VIOLATIONS_LISTED
    assert "10 more violations not listed" in result.notes


def test_lost_updates_are_counted_completely_and_listed_up_to_the_cap():
    # 40 pairs of buys on one product each reporting the same remainingStock: 40 lost updates.
    buys = []
    for i in range(40):
        buys += [buy(1 + i, 1.2 + i, 1, remaining=200 - i), buy(1.1 + i, 1.3 + i, 1, remaining=200 - i)]
    result = check({P: 241}, None, buys, [])
    assert result.counts["lost_update"] == 40 and result.units["lost_update"] == 40
    listed = [v for v in result.violations if v.kind == "lost_update"]
    assert len(listed) == oracle.checks.MAX_VIOLATIONS_PER_KIND
    data = result.to_dict()
    assert data["violation_counts"] == {"lost_update": 40} and data["violations_total"] == 40
    assert "lost_update x40 (40 units)" in result.summary_line()
    assert "35 more violations not listed" in result.notes


def test_three_buys_reporting_one_remaining_are_two_lost_updates():
    buys = [buy(1.0, 1.3, 1, remaining=9), buy(1.1, 1.4, 1, remaining=9), buy(1.2, 1.5, 1, remaining=9)]
    assert check({P: 10}, {P: 9}, buys, []).counts["lost_update"] == 2


@pytest.mark.parametrize("status, updated, outcome", [(200, True, "ok"), (400, False, "rejected"),
                                                     (404, False, "rejected"), (500, False, "failed"),
                                                     (0, False, "failed"), (200, False, "failed")])
def test_a_stock_update_is_applied_certainly_not_applied_or_unknown(status, updated, outcome):
    assert oracle.stock_update_outcome(status, updated) == outcome


# The ledger ---------------------------------------------------------------------------------------

def test_ledger_bound_drops_records_and_remembers_their_products():
    ledger = InventoryRecorder(max_records=3, source="w1")
    ledger.buy(1, 2, "a", 1, "ok", 9)
    ledger.stock_set(3, 4, "a", 50, "ok")
    ledger.buy(5, 6, "b", 1, "ok", 4)
    ledger.buy(7, 8, "c", 1, "ok", 3)
    ledger.stock_set(9, 10, "d", 5, "ok")
    assert len(ledger) == 3 and ledger.dropped_records == 2 and ledger.dropped_products == {"c", "d"}
    buys, sets = ledger.records()
    assert buys[0] == BuyRecord(1, 2, "a", 1, "ok", 9, None, "w1") and sets[0].source == "w1"


def test_drain_and_absorb_round_trip_through_json_and_msgpack_in_chunks():
    worker = InventoryRecorder(max_records=100, source="w1")
    for i in range(25):
        worker.buy(i, i + 0.5, "a", 1, "ok", 100 - i)
    worker.stock_set(30, 31, "a", 60, "ok")
    worker.buy(40, 41, "z", 1, "ok", 1)
    worker.dropped_products.add("q")
    worker.dropped_records = 4
    expected_buys, expected_sets = worker.records()
    chunks = oracle.split_payload(worker.drain(), chunk_records=10)
    assert len(chunks) == 3 and len(worker) == 0
    master = InventoryRecorder(max_records=100, source="master")
    for number, chunk in enumerate(chunks):
        wire = msgpack.unpackb(msgpack.packb(chunk)) if number % 2 else json.loads(json.dumps(chunk))
        master.absorb(wire, source="w1")
    buys, sets = master.records()
    assert buys == expected_buys and sets == expected_sets
    assert master.dropped_products == {"q"} and master.dropped_records == 4


def test_empty_drain_still_gives_one_chunk():
    chunks = oracle.split_payload(InventoryRecorder(source="w2").drain())
    assert len(chunks) == 1 and chunks[0]["buys"] == [] and chunks[0]["source"] == "w2"


def _bytes_per_record(record, count: int = 100_000) -> float:
    """Traced memory the ledger gains per record, recording `count` records through `record(ledger, i)`."""
    ledger = InventoryRecorder(max_records=count)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            record(ledger, i)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ledger) == count and ledger.dropped_records == 0
    return grown / count


def test_record_memory_is_bounded_per_record():
    # The product name is a new string each time, as when it comes from a parsed response: the ledger
    # must not keep it alive. Remaining above 256 and a real float per time: no small-int/float sharing.
    def record_buy(ledger, i):
        now = time.time()
        ledger.buy(now, now + 0.01, f"product {i % 20}", 1 + i % 3, "ok", 1000 + i, None)

    def record_mix(ledger, i):
        now = time.time()
        if i % 10 == 0:
            ledger.stock_set(now, now + 0.01, f"product {i % 20}", 5000 + i, "ok")
        else:
            ledger.buy(now, now + 0.01, f"product {i % 20}", 2, "insufficient", None, 300 + i)

    per_buy = _bytes_per_record(record_buy)
    per_mixed = _bytes_per_record(record_mix)
    # A packed buy row is 45 bytes (+ bytearray growth slack); a tuple per record was 152-182 bytes.
    assert per_buy < 80, per_buy
    assert per_mixed < 80, per_mixed


def test_records_come_back_exactly_as_recorded():
    ledger = InventoryRecorder(source="w1")
    t = 1_700_000_000.123456
    ledger.buy(t, t + 0.5, "a", 3, "ok", 0, None)
    ledger.buy(t, t + 0.5, "b", 1, "insufficient", None, -4)
    ledger.buy(t, t + 0.5, "a", 2, "not_found")
    ledger.buy(t, t + 0.5, "c", 2, "failed", -2**63 + 1, 2**63 - 1)
    ledger.stock_set(t, t + 1, "b", 7, "rejected")
    ledger.stock_set(t, t + 1, "a", -1, "failed")
    buys, sets = ledger.records()
    assert buys == [BuyRecord(t, t + 0.5, "a", 3, "ok", 0, None, "w1"),
                    BuyRecord(t, t + 0.5, "b", 1, "insufficient", None, -4, "w1"),
                    BuyRecord(t, t + 0.5, "a", 2, "not_found", None, None, "w1"),
                    BuyRecord(t, t + 0.5, "c", 2, "failed", -2**63 + 1, 2**63 - 1, "w1")]
    assert sets == [StockSetRecord(t, t + 1, "b", 7, "rejected", "w1"),
                    StockSetRecord(t, t + 1, "a", -1, "failed", "w1")]
    assert buys[0].product is buys[2].product  # one string per product


def test_fields_that_do_not_pack_are_kept_exactly_and_in_order():
    ledger = InventoryRecorder(source="w1")
    ledger.buy(1.0, 2.0, "a", 1, "ok", 9)
    ledger.buy(3.0, 4.0, "a", 2**70, "ok", -2**63)  # beyond int64; the None sentinel as a real value
    ledger.buy(5.0, 6.0, "a", 1, "refunded", 8)  # an outcome outside the contract
    ledger.buy(7.0, 8.0, "a", 1.5, "ok", None, -2**63)
    ledger.stock_set(9.0, 10.0, "a", 2**64, "ok")
    ledger.stock_set(11.0, 12.0, "a", 5, "ok")
    buys, sets = ledger.records()
    assert [(b.quantity, b.outcome, b.remaining, b.available) for b in buys] == [
        (1, "ok", 9, None), (2**70, "ok", -2**63, None), (1, "refunded", 8, None), (1.5, "ok", None, -2**63)]
    assert [b.start for b in buys] == [1.0, 3.0, 5.0, 7.0]
    assert [(s.start, s.stock) for s in sets] == [(9.0, 2**64), (11.0, 5)]
    chunks = oracle.split_payload(ledger.drain())
    master = InventoryRecorder(source="master")
    master.absorb(json.loads(json.dumps(chunks[0])), source="w1")
    assert master.records() == (buys, sets)


def test_pending_buy_records_failed_when_the_block_is_left_without_an_answer():
    ledger = InventoryRecorder(source="w1")
    with ledger.buying("a", 2) as pending:
        pending.done("ok", 8)
    with pytest.raises(gevent.GreenletExit):
        with ledger.buying("a", 1):
            raise gevent.GreenletExit()  # what a user killed mid-request sees
    buys, _ = ledger.records()
    assert [(b.outcome, b.remaining) for b in buys] == [("ok", 8), ("failed", None)]


def test_fetch_stock_reports_an_unreachable_service_in_one_line():
    stock_map, reason = snapshot_stock(f"http://127.0.0.1:{free_port()}", deadline_s=1, attempts=1)
    assert stock_map is None and reason.startswith("GET /products: ") and "\n" not in reason
    assert snapshot_stock(None) == (None, "no host known (give --host)")


# Locust wiring against the real reference service ---------------------------------------------------

class _Buyer(FastHttpUser):
    """Buys random products with no wait, recording through the process ledger like the locustfile."""

    wait_time = constant(0)
    products: list[str] = []

    @task
    def buy(self) -> None:
        name = random.choice(self.products)
        with oracle.recorder().buying(name, 1) as pending:
            with self.client.post("/products/buy", json={"name": name, "quantity": 1},
                                  name="Buy_Product", catch_response=True) as resp:
                if resp.status_code == 200:
                    pending.done("ok", resp.json()["data"]["remainingStock"])
                elif resp.status_code == 400:
                    pending.done("insufficient", None, parse_insufficient_stock(resp.json()["error"]["message"])[0])
                resp.success()


def _run_local(url: str, products: list[str], users: int, seconds: float, end) -> Environment:
    _Buyer.products = products
    env = Environment(user_classes=[_Buyer], host=url)
    runner = env.create_local_runner()
    oracle.install(env, OracleConfig(max_records=100_000, clock_skew_ms=50))
    attach_listeners(env.events, oracle.listeners(env))
    runner.start(users, spawn_rate=users * 50)
    gevent.sleep(seconds)
    end(env)
    return env


@pytest.mark.e2e
def test_local_run_against_the_reference_service_passes(product_service):
    stock_map, _ = snapshot_stock(product_service.url)
    env = _run_local(product_service.url, sorted(stock_map)[:3], users=6, seconds=1.5,
                     end=lambda env: env.runner.quit())  # test_stop runs the check
    result = oracle.result(env)
    assert result is not None and env.oracle_result is result
    assert result.passed is True, result.summary_line()
    assert result.products_checked == len(stock_map) >= 20
    assert len(oracle.recorder()) > 50  # it really recorded buys
    assert oracle.finalize(env) is result  # idempotent


@pytest.mark.e2e
def test_finalize_from_quitting_stops_running_users_first(product_service):
    stock_map, _ = snapshot_stock(product_service.url)
    holder = {}
    env = _run_local(product_service.url, sorted(stock_map)[:2], users=4, seconds=1.0,
                     end=lambda env: holder.setdefault("result", oracle.finalize(env)))  # as on Ctrl-C
    try:
        assert env.runner.user_count == 0
        assert holder["result"] is not None and holder["result"].passed is True, holder["result"].summary_line()
    finally:
        env.runner.quit()


@pytest.mark.e2e
def test_local_run_against_the_unsafe_service_reports_lost_updates(service_factory):
    service = service_factory("--unsafe-buy")
    stock_map, _ = snapshot_stock(service.url)
    contended = sorted(stock_map)[:1]
    # Stock for every buy of the run: the service loses about 7% of concurrent buys, so a product with 40
    # units would lose none in some runs; the oracle's start snapshot reads this level.
    assert ServiceClient(service.url).set_stock(contended[0], 5000) == 200
    env = _run_local(service.url, contended, users=8, seconds=1.5, end=lambda env: env.runner.quit())
    result = oracle.result(env)
    assert result.passed is False, result.summary_line()
    assert "lost_update" in kinds(result)
    assert all(v.product == contended[0] for v in result.violations)


def test_unreachable_start_snapshot_is_recorded_and_never_crashes():
    env = Environment(user_classes=[_Buyer], host=f"http://127.0.0.1:{free_port()}")
    env.create_local_runner()
    oracle.install(env, OracleConfig())
    attach_listeners(env.events, oracle.listeners(env))
    env.events.test_start.fire(environment=env)
    result = oracle.finalize(env)
    assert result.passed is None
    assert any(note.startswith("start snapshot failed: GET /products") for note in result.notes)


# Distributed: a real master and two workers ----------------------------------------------------------

DISTRIBUTED_LOCUSTFILE = '''
import json, os, random, sys
sys.path.insert(0, os.environ["REPO_ROOT"])
from locust import FastHttpUser, constant, events, task
from loadsuite import oracle
from loadsuite.config import OracleConfig
from loadsuite.runtime.attach import attach_listeners

@events.init.add_listener
def _install(environment, **_kw):
    oracle.install(environment, OracleConfig(clock_skew_ms=50))
    attach_listeners(environment.events, oracle.listeners(environment))

@events.quitting.add_listener
def _verdict(environment, **_kw):
    from locust.runners import WorkerRunner
    if isinstance(environment.runner, WorkerRunner):
        return
    result = oracle.finalize(environment)
    with open(os.environ["ORACLE_OUT"], "w") as out:
        json.dump(result.to_dict(), out)

@events.spawning_complete.add_listener
def _running(user_count, **_kw):
    open(os.environ["ORACLE_OUT"] + ".running", "w").close()

class Buyer(FastHttpUser):
    wait_time = constant(0)

    @task
    def buy(self):
        name = random.choice(json.loads(os.environ["ORACLE_PRODUCTS"]))
        with oracle.recorder().buying(name, 1) as pending:
            with self.client.post("/products/buy", json={"name": name, "quantity": 1},
                                  name="Buy_Product", catch_response=True) as resp:
                if resp.status_code == 200:
                    pending.done("ok", resp.json()["data"]["remainingStock"])
                elif resp.status_code == 400:
                    pending.done("insufficient", None, parse_insufficient_stock(resp.json()["error"]["message"])[0])
                resp.success()
'''


def _run_distributed(tmp_path, url: str, products: list[str], master_args: list[str], signal_after: float | None = None):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    locustfile = tmp_path / "oracle_locustfile.py"
    locustfile.write_text(DISTRIBUTED_LOCUSTFILE)
    out = tmp_path / "consistency.json"
    env = {**os.environ, "REPO_ROOT": str(root), "ORACLE_OUT": str(out), "ORACLE_PRODUCTS": json.dumps(products)}
    port = free_port()
    common = [sys.executable, "-m", "locust", "-f", str(locustfile), "--only-summary"]
    master = subprocess.Popen([*common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                               str(port), "--headless", "--expect-workers", "2", "--host", url, *master_args],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = [subprocess.Popen([*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        if signal_after is not None:
            running = Path(f"{out}.running")
            deadline = time.monotonic() + 40
            while not running.exists() and master.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(signal_after)
            master.send_signal(signal.SIGTERM)
        log, _ = master.communicate(timeout=60)
        for worker in workers:
            worker.wait(timeout=30)
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert out.exists(), log[-3000:]
    return json.loads(out.read_text()), log


@pytest.mark.e2e
def test_distributed_run_time_end_collects_every_workers_records(tmp_path, product_service):
    stock_map, _ = snapshot_stock(product_service.url)
    products = sorted(stock_map)[:3]
    result, log = _run_distributed(tmp_path, product_service.url, products, ["-u", "6", "-r", "50", "-t", "3s"])
    assert result["passed"] is True, (result, log[-3000:])
    assert not any("did not report" in note for note in result["notes"]), result
    assert result["products_checked"] == len(stock_map)


@pytest.mark.e2e
def test_distributed_sigterm_on_the_master_still_decides(tmp_path, service_factory):
    service = service_factory("--unsafe-buy")
    stock_map, _ = snapshot_stock(service.url)
    products = sorted(stock_map)[:1]
    assert ServiceClient(service.url).set_stock(products[0], 5000) == 200  # enough to lose some of ~7%
    result, log = _run_distributed(tmp_path, service.url, products, ["-u", "8", "-r", "50", "-t", "60s"],
                                   signal_after=1.5)
    assert result["passed"] is False, (result, log[-3000:])
    assert "lost_update" in {v["kind"] for v in result["violations"]}
    assert not any("did not report" in note for note in result["notes"]), result


def test_complete_counts_reach_the_console_summary_json_junit_summary_md_and_the_web_tab(tmp_path):
    """40 lost updates and an oversell on one product: every output shows the complete counts, not the listed 5."""
    import xml.etree.ElementTree as ET

    from loadsuite.reporting import markdown, verdict
    from loadsuite.webui import tab
    from tests.test_analyze_results import basic_run

    buys = []
    for i in range(40):
        buys += [buy(1 + i, 1.2 + i, 1, remaining=200 - i), buy(1.1 + i, 1.3 + i, 1, remaining=200 - i)]
    consistency = json.loads(json.dumps(check({P: 30}, None, buys, []).to_dict()))
    assert consistency["violation_counts"] == {"oversell": 1, "lost_update": 40}
    assert consistency["violation_units"] == {"oversell": 50, "lost_update": 40}
    assert consistency["violations_total"] == 41 and len(consistency["violations"]) == 6
    summary = {"run_id": "r1", "duration_s": 1.0, "thresholds": [], "consistency": consistency,
               "verdict": verdict.decide([], consistency, True)}
    assert summary["verdict"]["reasons"] == ["FAIL: consistency: 41 violation(s): lost_update, oversell"]
    line = "oversell x1 (50 units), lost_update x40 (40 units)"
    assert f"violations by kind: {line}" in verdict.verdict_table(summary)
    failure = ET.parse(verdict.write_junit(tmp_path, summary)).getroot().find("testcase[@classname='consistency']/failure")
    assert line in failure.get("message") and line in failure.text
    folder = basic_run(tmp_path / "run", summary=summary)
    md = markdown.summary_markdown(markdown.load_run(folder), [])
    assert "| lost_update | 40 | 40 |" in md and "| oversell | 1 | 50 |" in md
    rows = tab.consistency_rows(consistency)
    assert [(r["metric"], r["observed"]) for r in rows[1:3]] == [("oversell violations", "1 (50 units)"),
                                                                  ("lost_update violations", "40 (40 units)")]
