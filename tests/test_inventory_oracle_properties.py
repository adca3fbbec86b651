"""Property tests: a correct store's serial histories never fail the oracle; an injected lost update always does."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadsuite.oracle import BuyRecord, StockSetRecord, check

SKEW = 0.05
OPS = ("buy", "buy", "buy", "buy", "set", "set_rejected", "buy_failed", "set_failed", "buy_unknown")
PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("ORACLE_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The bound and count properties below: fewer examples, each history is richer (keeps the file's time flat).
BOUND_SETTINGS = settings(max_examples=max(1, int(os.environ.get("ORACLE_EXAMPLES", "300")) // 3), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


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


@st.composite
def oversold_histories(draw):
    """A store that sells more than it has: start stock S, confirmed buys totalling more than S plus every
    stock update's value, interleaved with buys and stock updates of unknown outcome and refusals."""
    start = draw(st.integers(0, 20))
    sources = ("w1", "w2")
    events = draw(st.lists(st.tuples(
        st.sampled_from(("ok", "ok", "failed", "insufficient", "set_failed", "set_ok")),
        st.floats(0.0, 10.0), st.floats(0.001, 2.0), st.integers(1, 5), st.sampled_from(sources)),
        min_size=1, max_size=40))
    buys, sets = [], []
    for kind, begin, duration, value, source in events:
        at = (1_000.0 + begin, 1_000.0 + begin + duration)
        if kind in ("ok", "failed"):
            buys.append(BuyRecord(*at, "p", value, kind, 0 if kind == "ok" else None, None, source))
        elif kind == "insufficient":
            buys.append(BuyRecord(*at, "p", value, kind, None, value - 1, source))
        else:
            sets.append(StockSetRecord(*at, "p", value, "ok" if kind == "set_ok" else "failed", source))
    confirmed = sum(b.quantity for b in buys if b.outcome == "ok")
    excess = confirmed - start - sum(s.stock for s in sets)
    extra = draw(st.integers(max(0, 1 - excess), max(0, 1 - excess) + 10))  # confirmed buys after everything else, to oversell
    buys += [BuyRecord(1_020.0 + i, 1_020.5 + i, "p", 1, "ok", 0, None, "w1") for i in range(extra)]
    return start, buys, sets, excess + extra


@BOUND_SETTINGS
@given(oversold_histories(), st.integers(0, 30))
def test_unknown_outcomes_never_hide_a_proven_oversell(history, final):
    start, buys, sets, excess = history
    assert excess > 0
    result = check({"p": start}, {"p": final}, buys, sets, clock_skew_s=SKEW)
    assert result.passed is False
    assert result.units.get("oversell", 0) >= excess, result.to_dict()["violations"]


@BOUND_SETTINGS
@given(serial_histories(sources=("w1",), min_gap=0.001), st.integers(1, 20), st.booleans())
def test_a_final_stock_outside_the_unknown_outcomes_interval_is_a_violation_by_the_gap(history, gap, above):
    """Without stock updates a product's final stock lies in start - confirmed - [0, unknown]; any other
    final stock is a conservation violation exactly as large as its distance to that interval."""
    start, final, buys, sets = history
    product = sorted(start)[0]
    if any(s.product == product and s.outcome != "rejected" for s in sets):
        return
    mine = [b for b in buys if b.product == product]
    high = start[product] - sum(b.quantity for b in mine if b.outcome == "ok")
    low = high - sum(b.quantity for b in mine if b.outcome == "failed")
    assert low <= final[product] <= high
    wrong = dict(final, **{product: high + gap if above else low - gap})
    result = check(start, wrong, buys, sets, clock_skew_s=SKEW)
    [conservation] = [v for v in result.violations if v.kind == "conservation" and v.product == product]
    assert conservation.units == gap


@BOUND_SETTINGS
@given(serial_histories(sources=("w1",), min_gap=0.001), st.data())
def test_every_injected_lost_update_is_counted(history, data):
    start, final, buys, sets = history
    ok = [b for b in buys if b.outcome == "ok"]
    if not ok:
        return
    chosen = data.draw(st.lists(st.sampled_from(ok), unique=True, max_size=len(ok)))
    twins = [b._replace(start=b.start + (b.end - b.start) / 4, end=b.end - (b.end - b.start) / 4) for b in chosen]
    result = check(start, final, [*buys, *twins], sets, clock_skew_s=SKEW)
    assert result.counts.get("lost_update", 0) == len(chosen)
    assert len([v for v in result.violations if v.kind == "lost_update"]) <= len(chosen)
