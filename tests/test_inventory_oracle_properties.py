"""Property tests: a correct store's serial histories never fail the oracle; an injected lost update always does."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadsuite.oracle import BuyRecord, StockSetRecord, check

SKEW = 0.05
OPS = ("buy", "buy", "buy", "buy", "set", "set_rejected", "buy_failed", "set_failed", "buy_unknown")
PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("ORACLE_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def serial_histories(draw, min_gap: float = 0.0, sources=("w1", "w2", "w3"), max_offset: float = SKEW / 2):
    """Simulate a correct store one operation at a time; record what load generators with skewed clocks saw.

    Returns (start_stock, final_stock, buys, stock_sets). Each source's clock is off by at most
    max_offset, so any two sources disagree by at most SKEW.
    """
    products = [f"product {i}" for i in range(draw(st.integers(1, 3)))]
    start = {p: draw(st.integers(0, 30)) for p in products}
    offsets = {s: draw(st.floats(-max_offset, max_offset)) for s in sources}
    ops = draw(st.lists(st.tuples(
        st.sampled_from(OPS), st.sampled_from(products), st.integers(1, 12),
        st.floats(0.001, 0.05), st.sampled_from([min_gap, min_gap + 0.0005, min_gap + 0.3]),
        st.sampled_from(sources), st.booleans()), max_size=40))
    stock, now, buys, sets = dict(start), 1_000.0, [], []
    for op, product, value, duration, gap, source, applied in ops:
        begin = now + gap
        now = begin + duration
        at = (begin + offsets[source], now + offsets[source])
        if op == "buy":
            if value <= stock[product]:
                stock[product] -= value
                buys.append(BuyRecord(*at, product, value, "ok", stock[product], None, source))
            else:
                buys.append(BuyRecord(*at, product, value, "insufficient", None, stock[product], source))
        elif op == "buy_failed":
            if applied and value <= stock[product]:
                stock[product] -= value
            buys.append(BuyRecord(*at, product, value, "failed", None, None, source))
        elif op == "buy_unknown":
            buys.append(BuyRecord(*at, "Ghost", value, "not_found", None, None, source))
        elif op == "set":
            stock[product] = value
            sets.append(StockSetRecord(*at, product, value, "ok", source))
        elif op == "set_failed":
            if applied:
                stock[product] = value
            sets.append(StockSetRecord(*at, product, value, "failed", source))
        else:
            sets.append(StockSetRecord(*at, product, value, "rejected", source))
    return start, stock, buys, sets


@PROPERTY_SETTINGS
@given(serial_histories())
def test_serial_histories_of_a_correct_store_never_fail(history):
    start, final, buys, sets = history
    result = check(start, final, buys, sets, clock_skew_s=SKEW)
    assert result.passed in (True, None), result.to_dict()["violations"]
    assert not result.violations


@PROPERTY_SETTINGS
@given(serial_histories(sources=("w1",)))
def test_one_process_serial_histories_are_decided_when_nothing_is_unknown(history):
    start, final, buys, sets = history
    result = check(start, final, buys, sets, clock_skew_s=SKEW)
    assert result.passed in (True, None)
    if not any(r.outcome == "failed" for r in [*buys, *sets]):
        assert result.passed is True and not result.inconclusive


def _inject_lost_update(history, data, sources):
    """A second buy inside an ok buy's interval, same quantity and same remaining: the store applied only one."""
    start, final, buys, sets = history
    ok = [b for b in buys if b.outcome == "ok"]
    if not ok:
        return None
    first = data.draw(st.sampled_from(ok))
    duration = first.end - first.start
    source = data.draw(st.sampled_from(sources))
    twin = first._replace(start=first.start + duration / 4, end=first.end - duration / 4, source=source)
    return start, final, [*buys, twin], sets


@PROPERTY_SETTINGS
@given(serial_histories(sources=("w1",)), st.data())
def test_an_injected_lost_update_is_always_caught(history, data):
    injected = _inject_lost_update(history, data, ["w1"])
    if injected is None:
        return
    result = check(*injected, clock_skew_s=SKEW)
    assert result.passed is False
    assert {v.kind for v in result.violations} & {"lost_update", "conservation"}


@PROPERTY_SETTINGS
@given(serial_histories(min_gap=2.5 * SKEW), st.data())
def test_an_injected_lost_update_is_caught_across_skewed_workers_when_neighbours_are_apart(history, data):
    # Across workers, a neighbour closer than the clock skew could be the restock between the two buys.
    injected = _inject_lost_update(history, data, ["w1", "w2", "w3"])
    if injected is None:
        return
    result = check(*injected, clock_skew_s=SKEW)
    assert result.passed is False
    assert "lost_update" in {v.kind for v in result.violations}
