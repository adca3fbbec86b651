"""A target that wanders (issue 31): redirects to another origin, a service still starting, answers that contradict
what the same target said before. Real processes on loopback: tests/lying_shop.py tells each lie; run_tests.sh
runs as a user starts it (tests/suite_runs.py)."""
from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import free_port
from lying_shop import running, served
from loadsuite.cli.health import wait_until_healthy
from loadsuite.transport.headers import MAX_LOCATION_CHARS, describe_location
from loadsuite.transport.service_client import snapshot_stock
from suite_runs import run_suite, write_config

TRACEBACK = "Traceback (most recent call last)"
QUICK = {"wait_time": {"min_seconds": 0.05, "max_seconds": 0.2}, "service": {"request_timeout_seconds": 2}}


def quick_config(tmp_path, **sections):
    data = {key: dict(value) for key, value in QUICK.items()}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return write_config(tmp_path, data)


# Row W1: a redirect is judged, never followed -----------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("client", ["fast", "requests"])
def test_a_redirect_to_another_origin_is_a_failure_naming_the_location_and_never_followed(tmp_path, client):
    with running() as elsewhere:
        with running("--redirect", f"/products={elsewhere}/products",
                     "--redirect", f"/products/category={elsewhere}/products/category") as shop:
            config = quick_config(tmp_path, service={"client": client})
            run = run_suite("headless", "3", "3", shop, "--config", str(config), "--no-analysis",
                            results_root=tmp_path / "results", timeout=90)
            assert served(elsewhere) == 0, "a user or a stock snapshot followed the redirect to another origin"
    assert run.returncode == 1, run.explain()
    assert TRACEBACK not in run.stdout + run.stderr
    reasons = {row["Error"] for row in run.failures() if row["Name"] == "Get_All_Products"}
    assert reasons == {f"CatchResponseError('redirect: expected 200, saw 302 to {elsewhere}/products (another "
                       f"origin): not followed')"}, reasons
    summary = run.summary()
    assert summary["verdict"]["passed"] is False
    consistency = summary["consistency"]
    assert consistency["passed"] is not True and "302" in " ".join(consistency["notes"]), consistency


def test_the_oracle_snapshot_names_a_redirect_and_does_not_follow_it():
    with running() as elsewhere, running("--redirect", f"/products={elsewhere}/products") as shop:
        stock, why = snapshot_stock(shop, deadline_s=3)
        assert served(elsewhere) == 0
    assert stock is None
    assert why == (f"GET /products answered 302, a redirect to {elsewhere}/products (another origin): not followed "
                   "(the contract has no redirects)")


@settings(max_examples=300, deadline=None)
@given(location=st.one_of(st.none(), st.text(), st.sampled_from(["http://[::1", "//evil.example/x", "/p\x1b[2J <b>",
                                                                   "http://a:99999/", "javascript:alert(1)"])))
def test_a_location_is_named_in_words_every_output_can_carry(location):
    for base in (None, "http://127.0.0.1:8082/products"):
        shown = describe_location(location, base)
        if shown == "no Location":
            assert not (location or "").strip()
            continue
        assert not re.search(r"[\x00-\x20\x7f-\x9f<>\"`\\|]", shown.split(" (")[0]), shown
        assert len(shown.split(" (")[0]) <= MAX_LOCATION_CHARS


def test_a_target_inventing_locations_cannot_grow_the_failure_table_without_end(monkeypatch):
    """Locust keeps one failure entry per distinct text: only the first MAX_LOCATIONS_NAMED Locations are named."""
    from loadsuite.contract import checks
    import validators

    from loadsuite.runtime.custom_stats import STATS

    monkeypatch.setattr(checks, "_named_locations", set())
    monkeypatch.setattr(STATS, "unexpected_statuses", {})
    monkeypatch.setattr(STATS, "validation_failures", {})
    texts = set()
    for n in range(200):
        resp = SimpleNamespace(status_code=302, headers={"Location": f"http://127.0.0.1:{1000 + n}/x"},
                               request_meta={"name": "Get_All_Products", "url": "http://127.0.0.1:8082/products"},
                               content=b"", failure=texts.add, success=lambda: None)
        assert validators.expect_product_list(resp) is None
    assert len(texts) == checks.MAX_LOCATIONS_NAMED + 1
    assert any("another Location (more distinct ones than are named)" in text for text in texts)


# Row W2: a start-up wait that tells "not ready" from "unreachable" ---------------------------------------------

def test_a_service_still_starting_is_waited_for_within_the_deadline():
    with running("--warm-up", "1.5") as shop:
        notes = []
        started = time.monotonic()
        assert wait_until_healthy(shop, 10, note=notes.append) is None
        assert 1.3 < time.monotonic() - started < 8
    assert len(notes) == 1 and "503" in notes[0] and "up to 10 s" in notes[0]


def test_a_service_that_never_gets_ready_is_named_not_ready_not_unreachable():
    with running("--warm-up", "60") as shop:
        started = time.monotonic()
        why = wait_until_healthy(shop, 1.5)
        assert 1.4 < time.monotonic() - started < 5
    assert why.startswith("not ready (GET /health still answered 503 after 1 s") or \
        why.startswith("not ready (GET /health still answered 503 after 2 s"), why
    assert "service.ready_timeout_seconds" in why and "unreachable" not in why


def test_nothing_listening_is_unreachable_after_the_same_wait():
    why = wait_until_healthy(f"http://127.0.0.1:{free_port()}", 1.0)
    assert why.startswith("unreachable (GET /health: connection refused"), why


@pytest.mark.parametrize("lie", [["--redirect", "/health=http://127.0.0.1:1/health"]])
def test_a_wrong_target_ends_the_wait_at_once(lie):
    with running(*lie) as shop:
        started = time.monotonic()
        why = wait_until_healthy(shop, 10)
        assert time.monotonic() - started < 3, "a redirect cannot turn into a 200 by asking again"
    assert why.startswith("not the product-service (GET /health answered 302, a redirect to http://127.0.0.1:1/health")


@pytest.mark.e2e
def test_run_tests_sh_waits_for_a_service_warming_up_and_then_runs(tmp_path):
    with running("--warm-up", "3") as shop:
        run = run_suite("headless", "1", "2", shop, "--no-analysis", "--", "--tags", "health",
                        results_root=tmp_path / "results", timeout=60)
    assert run.returncode == 0, run.explain()
    assert "has not answered 200 yet (GET /health answered 503): asking again for up to 10 s" in run.stderr
    assert run.summary()["totals"]["requests"] > 0


@pytest.mark.e2e
def test_run_tests_sh_says_not_ready_and_exits_3_when_the_wait_runs_out(tmp_path):
    config = quick_config(tmp_path, service={"ready_timeout_seconds": 1.5})
    with running("--warm-up", "60") as shop:
        run = run_suite("headless", "1", "2", shop, "--config", str(config), "--no-analysis",
                        results_root=tmp_path / "results", timeout=60)
    assert run.returncode == 3, run.explain()
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith(f"run_tests.sh: target {shop} is not ready (GET /health still answered 503"), line
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# Row W4: every inconclusive result says why, in every output ------------------------------------------------

START_FAILURES = {
    "non_integer_stock": "GET /products returned a non-integer stock",
    "slow_first_products": "GET /products: no complete answer within 5 s",
    "target_gone": "GET /products: connection refused: nothing listens there",
    "redirect": "GET /products answered 302, a redirect to http://127.0.0.1:1/products (another origin): not followed",
}


@pytest.mark.parametrize("cause", sorted(START_FAILURES))
def test_an_inconclusive_oracle_carries_its_reason_to_the_console_summary_md_junit_and_the_web_tab(tmp_path, cause):
    import json
    import xml.etree.ElementTree as ET

    from loadsuite.oracle.checks import check
    from loadsuite.oracle.records import BuyRecord
    from loadsuite.reporting import markdown, verdict
    from loadsuite.webui import tab
    from tests.test_analyze_results import basic_run

    error = START_FAILURES[cause]
    result = check(None, None, [BuyRecord(1.0, 1.1, "Laptop", 1, "ok", remaining=9)], [], start_error=error,
                   final_error=error)
    consistency = json.loads(json.dumps(result.to_dict()))
    assert consistency["passed"] is None
    why = f"start snapshot failed: {error}; final snapshot failed: {error}"
    assert consistency["reason"] == why
    summary = {"run_id": "r1", "duration_s": 1.0, "thresholds": [], "consistency": consistency,
               "verdict": verdict.decide([], consistency, True)}
    assert f"  why inconclusive: {why}" in verdict.verdict_table(summary).splitlines()
    skipped = ET.parse(verdict.write_junit(tmp_path, summary)).getroot().find(
        "testcase[@classname='consistency']/skipped")
    assert skipped.get("message") == f"inconclusive: {why}"  # it read a key summary.json never had
    md = markdown.summary_markdown(markdown.load_run(basic_run(tmp_path / "run", summary=summary)), [])
    from loadsuite.reporting.tables import md_escape
    assert f"Why inconclusive: {md_escape(why)}" in md
    row = next(r for r in tab.tab_rows(summary, {}, "stopped") if r["metric"] == "why inconclusive")
    assert row["observed"] == why and row["result"] == "inconclusive"


def test_a_result_without_a_snapshot_problem_names_its_first_undecided_product():
    from loadsuite.oracle.checks import check
    from loadsuite.oracle.records import BuyRecord

    buys = [BuyRecord(1.0, 1.1, "Laptop", 1, "failed"), BuyRecord(1.0, 1.1, "Mug", 2, "failed")]
    result = check({"Laptop": 10, "Mug": 5}, {"Laptop": 9, "Mug": 4}, buys, [])
    assert result.passed is None
    assert result.reason() == ("Laptop: the final stock 9 lies within 9..10, what buys and stock updates with unknown "
                               "outcome or overlapping order allow (and 1 more products undecided)")
    assert check({"Laptop": 10}, {"Laptop": 10}, [], []).reason() is None  # decided: no reason to give


@pytest.mark.e2e
def test_a_start_snapshot_refused_for_a_non_integer_stock_is_named_by_the_run(tmp_path):
    import xml.etree.ElementTree as ET

    with running("--string-stock") as shop:
        run = run_suite("headless", "2", "2", shop, "--config", str(quick_config(tmp_path)),
                        results_root=tmp_path / "results", timeout=90)
    assert run.returncode == 1, run.explain()
    why = run.summary()["consistency"]["reason"]
    assert why.startswith("start snapshot failed: GET /products returned a non-integer stock"), why
    assert f"  why inconclusive: {why}" in run.stdout.splitlines()
    skipped = ET.parse(run.folder / "junit.xml").getroot().find("testcase[@classname='consistency']/skipped")
    assert skipped.get("message") == f"inconclusive: {why}"
    assert "Why inconclusive: start snapshot failed" in (run.folder / "summary.md").read_text()


# Row W3: answers checked against what the same target said before ---------------------------------------------

def _product(name, category="Books", price=10.0, stock=5, description="d"):
    return {"name": name, "description": description, "price": price, "stock": stock, "category": category}


def test_a_listing_must_hold_what_the_target_listed_before_unchanged_but_for_stock():
    from loadsuite.contract.checks import CheckFailed, check_catalogue, check_same_product

    known = {"A": _product("A"), "B": _product("B")}
    check_catalogue([_product("B", stock=0), _product("C"), _product("A", stock=99)], known)  # order, stock, extras
    check_catalogue([], {})  # nothing known yet: nothing to hold
    for answer, reason in (([], "saw none"), ([_product("A")], "saw some missing"),
                           ([_product("A"), _product("B", price=11.0)], "as listed before, saw others"),
                           ([_product("A"), _product("B", category="Apparel")], "as listed before, saw others")):
        with pytest.raises(CheckFailed) as failed:
            check_catalogue(answer, known)
        assert failed.value.check == "catalogue" and failed.value.reason.endswith(reason)
    check_same_product(_product("A", stock=0), known["A"])
    check_same_product(_product("A"), None)
    with pytest.raises(CheckFailed, match="the product list showed"):
        check_same_product(_product("A", description="another"), known["A"])


OPS = st.lists(st.one_of(
    st.tuples(st.just("refresh"), st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from(["X", "Y", "Z"])),
                                           max_size=6)),
    st.tuples(st.just("merge"), st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from(["X", "Y"])),
                                         max_size=3)),
    st.tuples(st.just("discard"), st.sampled_from("abcdef")),
    st.tuples(st.just("clear"), st.none())), max_size=25)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, limit=st.integers(1, 8))
def test_the_cache_knows_each_category_exactly_as_it_holds_it(ops, limit):
    from shared_data import ProductCache

    cache = ProductCache(limit)
    for op, arg in ops:
        if op == "refresh":
            cache.refresh_all([_product(name, category) for name, category in dict(arg).items()])
        elif op == "merge":
            cache.merge([_product(name, category) for name, category in dict(arg).items()])
        elif op == "discard":
            cache.discard(arg)
        else:
            cache.clear()
        everything = cache.known()
        assert len(everything) == len(cache) <= limit
        for category in ("X", "Y", "Z"):
            assert cache.known(category) == {n: p for n, p in everything.items() if p["category"] == category}


@pytest.mark.e2e
@pytest.mark.parametrize("lie, request_name, reason", [
    ("--empty-categories", "Get_Products_By_Category_Books", "catalogue: expected the products listed here before, "
                                                             "saw none"),
    ("--details-price-off", "Get_Product_Details", "catalogue: expected the description, price and category the "
                                                   "product list showed, saw others"),
])
def test_a_target_contradicting_its_own_catalogue_fails_the_run(tmp_path, lie, request_name, reason):
    with running(lie) as shop:
        run = run_suite("headless", "3", "4", shop, "--config", str(quick_config(tmp_path)), "--no-analysis",
                        "--", "BrowserUser", results_root=tmp_path / "results", timeout=90)
    assert run.returncode == 1, run.explain()
    failures = {(row["Name"], row["Error"]) for row in run.failures()}
    assert (request_name, f"CatchResponseError('{reason}')") in failures, failures
    assert run.summary()["custom_stats"]["validation_failures"].get("catalogue", 0) > 0


@pytest.mark.e2e
def test_the_cross_checks_never_flag_the_real_services_own_behaviour(tmp_path, service_factory):
    """`--profile go`: lists in random order, torn reads answering 500, lost updates, stock changing under every
    read while the flash sale's buyers buy: none of that is a catalogue failure."""
    service = service_factory("--profile", "go")
    config = quick_config(tmp_path, flash_sale={"start_seconds": 1, "duration_seconds": 4})
    run = run_suite("headless", "10", "6", service.url, "--config", str(config), "--no-analysis",
                    results_root=tmp_path / "results", timeout=120)
    assert TRACEBACK not in run.stdout + run.stderr
    summary = run.summary()
    requests = {row["name"]: row["requests"] for row in summary["endpoints"]}
    assert requests.get("Get_All_Products", 0) > 20 and requests.get("Get_Product_Details", 0) > 20, requests
    assert sum(n for name, n in requests.items() if name.startswith("Get_Products_By_Category_")) > 20, requests
    assert summary["custom_stats"]["purchases"] > 50  # stock changed under the reads all along
    assert "catalogue" not in summary["custom_stats"]["validation_failures"], summary["custom_stats"]
    assert not [row for row in run.failures() if "catalogue" in row["Error"]]
