"""verdict: thresholds judged on crafted numbers, the pass/fail decision, summary.json and junit.xml."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from locust.stats import RequestStats

from loadsuite.reporting import verdict
from loadsuite.config import EndpointThresholds, ThresholdsConfig

NO_LIMITS = {"error_rate": None, "p95_ms": None, "p99_ms": None, "avg_ms": None, "min_rps": None}


def limits(per_request: dict | None = None, **metrics) -> ThresholdsConfig:
    """Thresholds with only the given limits set (the config's defaults switched off)."""
    return ThresholdsConfig(**{**NO_LIMITS, **metrics},
                            per_request={k: EndpointThresholds(**v) for k, v in (per_request or {}).items()})


def metrics(requests=200, failures=2, rps=40.0, avg_ms=30.0, p95_ms=80.0, p99_ms=120.0) -> dict:
    return {"requests": requests, "failures": failures,
            "error_rate": failures / requests if requests else 0.0, "rps": rps,
            "avg_ms": avg_ms if requests else None, "min_ms": 1.0 if requests else None,
            "max_ms": 300.0 if requests else None, "p50_ms": 20.0 if requests else None,
            "p95_ms": p95_ms if requests else None, "p99_ms": p99_ms if requests else None}


def endpoint(name: str, method: str = "GET", **kwargs) -> dict:
    return {"name": name, "method": method, **metrics(**kwargs)}


TOTALS = metrics()  # error_rate 0.01, rps 40, avg 30, p95 80, p99 120


# Thresholds ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric, passing, failing, observed", [
    ("error_rate", 0.02, 0.005, 0.01),
    ("p95_ms", 100, 50, 80.0),
    ("p99_ms", 150, 119, 120.0),
    ("avg_ms", 31, 29.9, 30.0),
    ("min_rps", 39, 41, 40.0),  # a floor: observed must reach it
])
def test_each_total_metric_passes_and_fails(metric, passing, failing, observed):
    [ok] = verdict.evaluate_thresholds(TOTALS, [], limits(**{metric: passing}))
    [bad] = verdict.evaluate_thresholds(TOTALS, [], limits(**{metric: failing}))
    assert (ok.metric, ok.scope, ok.observed, ok.passed) == (metric, "total", pytest.approx(observed), True)
    assert (bad.metric, bad.scope, bad.observed, bad.passed) == (metric, "total", pytest.approx(observed), False)
    assert bad.limit == failing


@pytest.mark.parametrize("metric, limit", [
    ("error_rate", 0.01), ("p95_ms", 80), ("p99_ms", 120), ("avg_ms", 30), ("min_rps", 40),
])
def test_a_limit_equal_to_the_observed_value_passes(metric, limit):
    [result] = verdict.evaluate_thresholds(TOTALS, [], limits(**{metric: limit}))
    assert result.passed


def test_unset_limits_are_not_judged():
    assert verdict.evaluate_thresholds(TOTALS, [endpoint("Buy_Product")], limits()) == []


def test_all_limits_are_judged_in_a_stable_order():
    results = verdict.evaluate_thresholds(TOTALS, [], limits(error_rate=1, p95_ms=1000, p99_ms=1000,
                                                             avg_ms=1000, min_rps=1))
    assert [r.metric for r in results] == list(verdict.METRICS)
    assert all(r.passed for r in results)


def test_per_request_override_judges_that_request_only():
    rows = [endpoint("Buy_Product", "POST", p95_ms=400.0), endpoint("Get_All_Products", p95_ms=10.0)]
    results = verdict.evaluate_thresholds(TOTALS, rows, limits(
        p95_ms=500, per_request={"Buy_Product": {"p95_ms": 300}, "Get_All_Products": {"p95_ms": 300}}))
    by_scope = {r.scope: r for r in results}
    assert by_scope["total"].passed  # the whole run's p95 (80) is fine
    assert by_scope["Buy_Product"].observed == 400.0 and not by_scope["Buy_Product"].passed
    assert by_scope["Get_All_Products"].observed == 10.0 and by_scope["Get_All_Products"].passed


def test_per_request_error_rate_and_rps():
    rows = [endpoint("Buy_Product", "POST", requests=50, failures=5, rps=2.0)]
    results = verdict.evaluate_thresholds(TOTALS, rows, limits(
        per_request={"Buy_Product": {"error_rate": 0.05, "min_rps": 1.0}}))
    by_metric = {r.metric: r for r in results}
    assert by_metric["error_rate"].observed == pytest.approx(0.1) and not by_metric["error_rate"].passed
    assert by_metric["min_rps"].observed == 2.0 and by_metric["min_rps"].passed


def test_per_request_threshold_for_a_name_never_called_fails_with_observed_none():
    [result] = verdict.evaluate_thresholds(TOTALS, [endpoint("Buy_Product")],
                                           limits(per_request={"Buy_Prodcut": {"p95_ms": 1000}}))
    assert result.scope == "Buy_Prodcut" and result.observed is None and result.passed is False
    assert "no requests" in result.describe()


def test_per_request_threshold_for_a_name_with_zero_requests_fails():
    [result] = verdict.evaluate_thresholds(TOTALS, [endpoint("Buy_Product", requests=0, failures=0)],
                                           limits(per_request={"Buy_Product": {"error_rate": 0.5}}))
    assert result.observed is None and not result.passed


def test_total_limits_of_a_run_without_requests_fail():
    results = verdict.evaluate_thresholds(metrics(requests=0, failures=0, rps=0.0), [],
                                          limits(error_rate=0.01, p95_ms=1000))
    assert [(r.observed, r.passed) for r in results] == [(None, False), (None, False)]


def test_describe_names_metric_scope_observed_and_limit():
    [result] = verdict.evaluate_thresholds(TOTALS, [], limits(p95_ms=50))
    text = result.describe()
    assert text.startswith("FAIL") and "p95_ms total" in text and "80 ms" in text and "50 ms" in text


# The decision --------------------------------------------------------------------------------------

PASSING = verdict.evaluate_thresholds(TOTALS, [], limits(p95_ms=100, error_rate=0.05))
FAILING = verdict.evaluate_thresholds(TOTALS, [], limits(p95_ms=50, error_rate=0.05))
CONSISTENT = {"enabled": True, "passed": True, "violations": []}
INCONCLUSIVE = {"enabled": True, "passed": None, "violations": []}
VIOLATED = {"enabled": True, "passed": False, "violations": [
    {"product": "Laptop", "kind": "lost_update", "message": "two buys reported 9", "evidence": []},
    {"product": "Laptop", "kind": "conservation", "message": "stock 10 -> 9 after 2 buys", "evidence": []},
]}


def test_everything_passing_exits_0():
    assert verdict.decide(PASSING, CONSISTENT, True) == {"passed": True, "exit_code": 0, "reasons": []}


def test_a_failing_threshold_exits_1_with_its_reason():
    decision = verdict.decide(FAILING, CONSISTENT, True)
    assert decision["passed"] is False and decision["exit_code"] == 1
    assert len(decision["reasons"]) == 1 and "p95_ms total" in decision["reasons"][0]


def test_consistency_false_fails_naming_the_kinds():
    decision = verdict.decide(PASSING, VIOLATED, True)
    assert decision["exit_code"] == 1
    assert decision["reasons"] == ["FAIL: consistency: 2 violation(s): conservation, lost_update"]


def test_threshold_and_consistency_failures_are_both_reported():
    assert len(verdict.decide(FAILING, VIOLATED, True)["reasons"]) == 2


def test_inconclusive_consistency_does_not_fail():
    assert verdict.decide(PASSING, INCONCLUSIVE, True)["exit_code"] == 0


def test_consistency_not_required_or_disabled_does_not_fail():
    assert verdict.decide(PASSING, VIOLATED, False)["exit_code"] == 0
    assert verdict.decide(PASSING, {**VIOLATED, "enabled": False}, True)["exit_code"] == 0


# summary.json and junit.xml ------------------------------------------------------------------------

def summary(results, consistency, run_id="20261125T140000Z") -> dict:
    return {"run_id": run_id, "duration_s": 12.5, "thresholds": verdict.threshold_dicts(results),
            "consistency": consistency, "verdict": verdict.decide(results, consistency, True)}


def junit(tmp_path, results, consistency) -> ET.Element:
    path = verdict.write_junit(tmp_path, summary(results, consistency))
    assert path == tmp_path / "junit.xml"
    return ET.parse(path).getroot()


def test_junit_has_one_case_per_threshold_and_one_for_consistency(tmp_path):
    rows = [endpoint("Buy_Product", "POST", p95_ms=400.0)]
    results = verdict.evaluate_thresholds(TOTALS, rows, limits(
        error_rate=0.05, p95_ms=50, per_request={"Buy_Product": {"p95_ms": 500}, "Never_Called": {"avg_ms": 5}}))
    root = junit(tmp_path, results, CONSISTENT)
    cases = root.findall("testcase")
    assert len(cases) == len(results) + 1 == 5
    failed = {case.get("name") for case in cases if case.find("failure") is not None}
    assert failed == {"p95_ms total", "avg_ms Never_Called"}
    assert root.get("tests") == "5" and root.get("failures") == "2"
    assert [c.get("classname") for c in cases].count("consistency") == 1
    message = next(c for c in cases if c.get("name") == "p95_ms total").find("failure").get("message")
    assert "80 ms" in message and "50 ms" in message


def test_junit_marks_a_consistency_violation_with_its_evidence_text(tmp_path):
    root = junit(tmp_path, PASSING, VIOLATED)
    [case] = [c for c in root.findall("testcase") if c.get("classname") == "consistency"]
    failure = case.find("failure")
    assert failure is not None and "lost_update: Laptop" in failure.text and "conservation: Laptop" in failure.text
    assert root.get("failures") == "1"


def test_junit_shows_inconclusive_consistency_as_skipped_not_failed(tmp_path):
    root = junit(tmp_path, PASSING, INCONCLUSIVE)
    [case] = [c for c in root.findall("testcase") if c.get("classname") == "consistency"]
    assert case.find("skipped") is not None and case.find("failure") is None
    assert root.get("failures") == "0" and root.get("skipped") == "1"


def test_junit_without_oracle_has_no_consistency_case(tmp_path):
    root = junit(tmp_path, PASSING, {"enabled": False, "passed": None})
    assert [c.get("classname") for c in root.findall("testcase")] == ["thresholds"] * len(PASSING)


def test_junit_escapes_names_and_messages(tmp_path):
    name = 'Edge "<&>" case'
    results = verdict.evaluate_thresholds(TOTALS, [], limits(per_request={name: {"p95_ms": 1}}))
    violated = {"enabled": True, "passed": False, "violations": [
        {"product": "Mug <&> \"cup\"", "kind": "oversell", "message": "sold 3 > 2 & more", "evidence": []}]}
    root = junit(tmp_path, results, violated)
    names = [c.get("name") for c in root.findall("testcase")]
    assert f"p95_ms {name}" in names
    assert "Mug <&> \"cup\"" in root.find("testcase[@classname='consistency']/failure").text


def test_summary_json_round_trips_and_leaves_no_temporary_file(tmp_path):
    data = summary(FAILING, VIOLATED)
    path = verdict.write_summary(tmp_path, data)
    assert json.loads(path.read_text()) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    assert json.loads(path.read_text())["verdict"]["exit_code"] == 1


def test_verdict_table_lists_thresholds_consistency_and_verdict():
    table = verdict.verdict_table(summary(FAILING, VIOLATED))
    assert "p95_ms total" in table and "FAIL" in table and "lost_update: Laptop" in table
    assert "verdict: FAIL (exit code 1)" in table


# Metrics from Locust's own statistics ----------------------------------------------------------------

def test_entry_metrics_from_locust_stats():
    stats = RequestStats()
    for ms in range(1, 101):  # 1..100 ms
        stats.log_request("POST", "Buy_Product", ms, 10)
    for _ in range(5):
        stats.log_error("POST", "Buy_Product", "status: expected 200, saw 500")
    entry = stats.get("Buy_Product", "POST")
    row = verdict.entry_metrics(entry)
    assert row["requests"] == 100 and row["failures"] == 5 and row["error_rate"] == 0.05
    assert row["min_ms"] == 1 and row["max_ms"] == 100 and row["avg_ms"] == 50.5
    # the same percentiles Locust's own report shows
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == tuple(
        entry.get_response_time_percentile(q) for q in (0.5, 0.95, 0.99))
    assert 94 <= row["p95_ms"] <= 96 and 98 <= row["p99_ms"] <= 100
    [endpoint_row] = verdict.endpoint_rows(stats)
    assert endpoint_row["name"] == "Buy_Product" and endpoint_row["method"] == "POST"


def test_entry_metrics_of_an_endpoint_without_requests_has_null_latencies():
    stats = RequestStats()
    row = verdict.entry_metrics(stats.get("Health_Check", "GET"))
    assert row["requests"] == 0 and row["error_rate"] == 0.0
    assert all(row[key] is None for key in ("avg_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms"))



@pytest.mark.parametrize("samples_ms", [[1.1], [1.4, 0.6], [0.2, 0.3, 7.6], [104.0, 1.0]])
def test_percentiles_of_a_few_samples_are_ordered_and_within_min_and_max(samples_ms):
    # Locust rounds response times into buckets; alone, a bucket can sit below the minimum or above the maximum.
    stats = RequestStats()
    for ms in samples_ms:
        stats.log_request("GET", "Health_Check", ms, 10)
    row = verdict.entry_metrics(stats.get("Health_Check", "GET"))
    assert row["min_ms"] <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"], row
    if len(samples_ms) == 1:
        assert row["p50_ms"] == row["p99_ms"] == round(samples_ms[0], 2)  # one sample: every percentile is it


def test_a_limit_of_a_thousandth_of_a_millisecond_never_reads_as_zero(tmp_path):
    row = {"metric": "p95_ms", "scope": "total", "limit": 0.001, "observed": 0.8, "passed": False}
    assert verdict.ThresholdResult(**row).describe() == "FAIL: p95_ms total: observed 0.8 ms, limit <= 0.001 ms"
    junit = ET.parse(verdict.write_junit(tmp_path, {"run_id": "r", "thresholds": [row],
                                                    "consistency": {"enabled": False}})).getroot()
    assert "limit <= 0.001 ms" in junit.find("testcase/failure").get("message")
