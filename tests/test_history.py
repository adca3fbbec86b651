"""The run history (analyze_results.py --history): change points on synthetic histories of weekly runs, the
verdict on the latest run, comparable groups kept apart, and the trend report's files."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, ROOT
from fake_history import noisy_factors, run_id, summary, write_history, write_run
from loadsuite.history import run_history
from loadsuite.history.changepoints import find_changes
from loadsuite.history.trend import Settings
from loadsuite.history.report import HISTORY_JSON, HISTORY_MD, mermaid_text

SEEDS = range(10)


def cli(root, *args):
    """analyze_results.py --history as a user runs it: (exit code, stdout + stderr, history.json or None)."""
    proc = subprocess.run([PYTHON, str(ROOT / "analyze_results.py"), "--history", str(root), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    out = root / "history" / HISTORY_JSON if root.is_dir() else root.parent / "none"
    return proc.returncode, proc.stdout + proc.stderr, json.loads(out.read_text()) if out.is_file() else None


def history(root, settings=Settings()):
    """What the CLI does, in this process and without the charts (seconds each): (exit code, text, history.json)."""
    code, text = run_history(root, settings, None, with_charts=False)
    return code, text, json.loads((root / "history" / HISTORY_JSON).read_text())


def changes_of(report, request="Total", metric="p95", group=1):
    return [c for c in report["groups"][group - 1]["changes"] if c["request"] == request and c["metric"] == metric]


# The detection itself ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_a_step_at_run_20_of_30_is_found_at_run_20(seed):
    rng = np.random.default_rng(seed)
    p95 = 50 * np.exp(rng.normal(0, 0.05, 30))
    p95[19:] *= 1.3  # runs 20..30 are 30% slower
    found = find_changes(np.log(p95), floor=0.01)
    step = max(found, key=lambda c: abs(c.after - c.before))
    assert step.index + 1 == 20, found
    assert step.after - step.before == pytest.approx(np.log(1.3), abs=0.06)
    # Noise can look like a smaller change elsewhere (1 history in 50 here: bench/history.py measures it).
    assert all(abs(c.after - c.before) < 0.5 * np.log(1.3) for c in found if c is not step), found


def test_a_noisy_history_without_a_change_has_almost_never_a_change_point():
    """200 histories of 30 runs with 10% noise and no change: at most 3% have a (false) change point."""
    false_alarms = sum(bool(find_changes(np.log(50 * np.exp(np.random.default_rng(s).normal(0, 0.1, 30))), floor=0.01))
                       for s in range(200))
    assert false_alarms <= 6, false_alarms


def test_one_wild_run_is_not_a_change_and_a_constant_series_has_none():
    values = [50.0] * 14 + [150.0] + [50.0] * 15
    assert find_changes(np.log(np.array(values) * np.exp(np.random.default_rng(7).normal(0, 0.03, 30))),
                        floor=0.01) == []
    assert find_changes([3.0] * 30, floor=0.5) == []
    assert find_changes([1.0, 2.0, 3.0], floor=0.01) == []  # too short for two sides of two runs


def test_a_slow_drift_is_found_although_no_two_neighbours_differ_much():
    drift = np.log(50 * 1.02 ** np.arange(30) * np.exp(np.random.default_rng(3).normal(0, 0.02, 30)))
    assert find_changes(drift, floor=0.01)  # +2% a run: 80% over the history, never more than a few % a week


# The CLI on synthetic histories ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS[:3])
def test_the_report_marks_the_step_at_run_20_but_a_change_long_ago_judges_nothing(tmp_path, seed):
    write_history(tmp_path, noisy_factors(30, seed=seed, step_at=20, step=0.3))
    code, out, report = history(tmp_path)
    assert code == 0, out
    [change] = changes_of(report)
    assert change["run"] == 20 and change["run_id"] == run_id(19) and change["judgement"] == "worse beyond tolerance"
    assert change["after"] / change["before"] == pytest.approx(1.3, rel=0.08)
    assert "no regression" in out and not report["regressions"]
    # ... and the verdict does not call the latest run the level of all 30: it names the earlier change.
    assert "on the level of its 30 comparable runs" not in out, out
    assert f"worse beyond tolerance started earlier (the first at run 20 of 30, {run_id(19)}" in out, out


def test_a_history_without_a_change_says_the_latest_run_is_on_the_level_of_all_its_runs(tmp_path):
    write_history(tmp_path, noisy_factors(12, seed=5, noise=0.03))
    code, out, report = history(tmp_path)
    assert code == 0 and f"the latest run ({run_id(11)}) is on the level of its 12 comparable runs" in out, out


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_noisy_history_with_no_change_yields_no_change_point(tmp_path, seed):
    write_history(tmp_path, noisy_factors(30, seed=seed, noise=0.08))
    code, out, report = history(tmp_path)
    assert code == 0 and report["groups"][0]["changes"] == [], out


def test_a_change_within_the_last_runs_fails_with_metric_medians_and_the_run_it_started(tmp_path):
    write_history(tmp_path, noisy_factors(22, seed=4, step_at=21, step=0.4))
    code, out, report = cli(tmp_path)
    assert code == 1, out
    regression = next(r for r in report["regressions"] if r["request"] == "Total" and r["metric"] == "p95")
    assert regression["run"] == 21 and regression["run_id"] == run_id(20)
    line = next(line for line in out.splitlines() if line.startswith("REGRESSION: p95 of Total"))
    assert f"{regression['before']:.3g}"[:2] in line and "since run 21 of 22" in line and run_id(20) in line
    assert "->" in line and "(+" in line
    assert "❌ **REGRESSION: p95 of Total" in (tmp_path / "history" / HISTORY_MD).read_text()


def test_one_slow_latest_run_is_watched_not_failed(tmp_path):
    write_history(tmp_path, noisy_factors(21, seed=5, step_at=21, step=0.5))
    code, out, report = history(tmp_path)
    assert code == 0 and not report["regressions"], out
    assert "watch: p95 of Total: the latest run's" in out and "the next run confirms it or not" in out


def test_an_improvement_is_not_a_regression(tmp_path):
    write_history(tmp_path, noisy_factors(24, seed=6, step_at=21, step=-0.4))
    code, out, report = history(tmp_path)
    assert code == 0, out
    assert changes_of(report)[0]["judgement"] == "improved"


def test_a_throughput_drop_is_a_regression(tmp_path):
    write_history(tmp_path, noisy_factors(24, seed=8, step_at=22, step=-0.4, metric="rps"))
    code, out, report = history(tmp_path)
    assert code == 1 and any(r["metric"] == "rps" and r["request"] == "Total" for r in report["regressions"]), out


def test_oracle_violations_appearing_are_a_regression(tmp_path):
    factors = noisy_factors(20, seed=9)
    for index, f in enumerate(factors):
        write_run(tmp_path, summary(index, f, violations=3 if index >= 17 else 0))
    code, out, report = history(tmp_path)
    assert code == 1 and [r["metric"] for r in report["regressions"]] == ["violations"], out


def test_capacity_from_capacity_json_is_followed(tmp_path):
    factors = noisy_factors(20, seed=10)
    rng = np.random.default_rng(10)
    for index, f in enumerate(factors):
        capacity = 400 * float(np.exp(rng.normal(0, 0.03))) * (0.6 if index >= 17 else 1.0)
        write_run(tmp_path, summary(index, f), capacity={"capacity_rps": capacity, "capacity_users": 80})
    write_run(tmp_path / "skip", summary(0))  # not under the root: not read
    code, out, report = history(tmp_path)
    assert code == 1 and [r["metric"] for r in report["regressions"]] == ["capacity_rps"], out
    assert "capacity (req/s)" in (tmp_path / "history" / HISTORY_MD).read_text()


# Groups -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("differs", [{"users": 50}, {"duration_s": 600.0}, {"shape": "spike"},
                                     {"suite_version": "0"}, {"bundled": False, "host": "http://shop.internal:8082"}],
                         ids=lambda d: next(iter(d)))
def test_runs_that_are_not_comparable_are_grouped_apart_never_mixed(tmp_path, differs):
    factors = noisy_factors(30, seed=11)
    for index, f in enumerate(factors):  # every other week the other kind of run, twice as slow
        other = index % 2 == 1
        write_run(tmp_path, summary(index, {**f, "latency": f["latency"] * (2 if other else 1)},
                                    **(differs if other else {})))
    code, out, report = history(tmp_path)
    assert code == 0, out
    assert [len(g["runs"]) for g in report["groups"]] == [15, 15]
    assert all(g["changes"] == [] for g in report["groups"]), out  # mixed, the alternation would be all changes
    text = (tmp_path / "history" / HISTORY_MD).read_text()
    assert "## Group 1 (the latest run): 15 runs" in text and "## Group 2: 15 runs" in text
    assert "kept in separate groups" in text


def test_bundled_runs_on_different_ports_and_slightly_different_lengths_are_one_group(tmp_path):
    for index, f in enumerate(noisy_factors(12, seed=12)):
        write_run(tmp_path, summary(index, f, host=f"http://127.0.0.1:{40000 + index}", duration_s=300 + index))
    code, out, report = history(tmp_path)
    assert code == 0 and len(report["groups"]) == 1, out


# Input -------------------------------------------------------------------------------------------------------

def test_runs_that_did_not_measure_are_listed_as_not_used_and_a_run_cut_short_is_kept_apart(tmp_path):
    write_history(tmp_path, noisy_factors(8, seed=13))
    write_run(tmp_path, {**summary(8, duration_s=40.0), "interrupted": True})  # one Ctrl-C after 40 s of 300
    write_run(tmp_path, summary(9, exit_code=5))  # Locust died
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    (tmp_path / "latest").symlink_to(run_id(7))
    code, out, report = history(tmp_path)
    assert code == 0 and [len(g["runs"]) for g in report["groups"]] == [1, 8], out
    assert report["groups"][0]["runs"] == [run_id(8)] and "not judged" in out
    assert {n["folder"]: n["why"] for n in report["not_used"]} == {
        run_id(9): "did not measure properly (exit code 5)", "broken": "not valid JSON (JSONDecodeError)"}


def test_too_few_runs_are_not_judged_and_say_so(tmp_path):
    write_history(tmp_path, noisy_factors(3, seed=14))
    code, out, _ = history(tmp_path)
    assert code == 0 and "not judged: the latest run" in out and "has 3 comparable run(s)" in out


def _a_file(root):
    (root / "f").write_text("x")
    return root / "f"


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "results root not found"),
    (lambda root: root, "no run folder with a usable summary.json"),
    (_a_file, "not a folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, message):
    code, out, _ = cli(make(tmp_path))
    assert code == 2 and message in out and len(out.strip().splitlines()) == 1 and "Traceback" not in out


def test_usage_errors_name_the_fix(tmp_path):
    proc = subprocess.run([PYTHON, str(ROOT / "analyze_results.py"), "--history", str(tmp_path), "--recent", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr
    proc = subprocess.run([PYTHON, str(ROOT / "analyze_results.py"), str(tmp_path), "--history", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "pass one of RESULTS_DIR, --compare" in proc.stderr


# The report's files --------------------------------------------------------------------------------------------

def test_the_report_has_charts_tables_a_mermaid_chart_and_escapes_what_it_shows(tmp_path):
    write_history(tmp_path, noisy_factors(26, seed=15, step_at=14, step=0.5), bundled=False,
                  host="http://evil|host")
    code, out, report = cli(tmp_path, "--out", str(tmp_path / "trend"))
    out_dir = tmp_path / "trend"
    text = (out_dir / HISTORY_MD).read_text()
    for chart in ("history_g1_total.png", "history_g1_requests.png"):
        assert f"]({chart})" in text
        assert (out_dir / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "```mermaid\nxychart-beta" in text and "evil\\|host" in text and "evil|host" not in text
    assert "| Total | p95 | 14 (" in text  # the change point's row
    assert "◆" in text  # and its mark in the per-run table
    assert mermaid_text('a "quoted" [x]') == "a quoted x"
