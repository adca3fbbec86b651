"""The capacity finder: the search's rule on plain numbers, and one real search against a service whose capacity
the test knows (the reference service's --handlers/--service-time-ms mode)."""
from __future__ import annotations

import json

import pytest

from loadsuite.capacity.search import Next, Search
from suite_runs import run_suite, write_config


def search_against(true_rps: float, *, start=10.0, growth=2.0, tolerance=0.05, max_rps=10_000.0,
                   generator_rps: float | None = None, steps_allowed: int = 60) -> tuple[Search, list[Next]]:
    """Run the search against a target that passes every rate up to true_rps (and a generator up to generator_rps)."""
    search = Search(start, growth, tolerance, max_rps)
    steps = []
    while (step := search.next()) is not None:
        steps.append(step)
        assert len(steps) <= steps_allowed, steps
        outcome = ("generator" if generator_rps is not None and step.rate > generator_rps
                   else "pass" if step.rate <= true_rps else "fail")
        search.record(step, outcome)
    return search, steps


@pytest.mark.parametrize("true_rps", [7.3, 100.0, 333.0, 2500.0])
def test_the_search_ends_within_its_tolerance_below_the_true_capacity_and_confirms_it(true_rps):
    search, steps = search_against(true_rps)
    assert search.confirmed is not None and search.confirmed <= true_rps
    assert search.confirmed >= true_rps / 1.05 / 1.05, (search.confirmed, steps)  # the bisection's gap, at most
    assert steps[-1] == Next(search.confirmed, "confirm")


def test_a_failed_confirmation_sends_the_search_below_the_rate_it_refuted():
    search = Search(10, 2, 0.05, 10_000)
    outcomes = iter(["pass", "pass", "pass", "fail"])  # 10, 20, 40 pass, 80 fails
    while (step := search.next()) is not None and step.kind == "step" and search.hi is None:
        search.record(step, next(outcomes))
    while step is not None and step.kind == "step":  # bisect with everything <= 50 passing
        search.record(step, "pass" if step.rate <= 50 else "fail")
        step = search.next()
    refuted = step.rate
    search.record(step, "fail")  # the confirmation fails: that rate is a failing rate now
    following = search.next()
    assert following is not None and following.rate < refuted and search.hi == refuted


def test_a_generator_limited_step_ends_the_growth_with_at_least_the_last_passing_rate():
    search, steps = search_against(10_000, generator_rps=300)
    assert search.generator_limited_at is not None and search.generator_limited_at > 300
    assert search.confirmed is not None and search.confirmed <= 300
    assert "generator" in search.done_because


def test_a_failing_start_rate_goes_down_and_an_impossible_target_ends_with_nothing_proven():
    search, _ = search_against(3.0, start=40)
    assert search.confirmed is not None and search.confirmed <= 3.0
    search, _ = search_against(0.0, start=4)
    assert search.confirmed is None and ("no rate passed" in search.done_because or "failed" in search.done_because)


@pytest.mark.e2e
def test_the_finder_proves_a_rate_within_10_percent_below_a_known_capacity(tmp_path, service_factory):
    """2 handlers x 20 ms: 100 requests/s. The p95 limit sits above the service time so the knee decides."""
    service = service_factory("--handlers", "2", "--service-time-ms", "20")
    config = write_config(tmp_path, {
        "capacity": {"start_rps": 15, "warmup_seconds": 0.5, "plateau_seconds": 1.5, "confirm_seconds": 4,
                     "time_budget_seconds": 60},
        "thresholds": {"p95_ms": 40, "p99_ms": 80},
    })
    run = run_suite("capacity", service.url, "--config", str(config), "--require-capacity", "150", "--no-analysis",
                    results_root=tmp_path / "results", timeout=120)
    answer = json.loads((run.folder / "capacity.json").read_text(encoding="utf-8"))
    # Within 10%; above the true 100 only by what a short proof cannot see: a rate 1.25% above it builds a backlog
    # of about 5 requests in a 4-s confirmation, within the p95 limit (docs/capacity.md, "Not built yet").
    assert 90 <= answer["capacity_rps"] <= 102, answer
    assert answer["generator_limited"] is False
    assert run.returncode == 1, run.explain()  # proven, but below the 150 required
    steps = (run.folder / "steps.csv").read_text(encoding="utf-8").splitlines()
    assert len(steps) >= 5 and any("confirm" in line for line in steps), steps
    assert answer["search"]["elapsed_s"] <= 60, answer["search"]
    assert "capacity search: capacity " in run.stderr, run.explain()
