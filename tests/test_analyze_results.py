"""analyze_results.py: tables, charts and summary.md from Locust CSVs, robust input, and --compare exit codes."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.image
import pytest

import analyze_results as ar
from loadsuite.reporting import charts as rc
from loadsuite.reporting import compare as comparison_module, markdown, results
from conftest import ROOT, start_service

PERCENTS = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
STATS_HEADER = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
                "Max Response Time,Average Content Size,Requests/s,Failures/s," + ",".join(PERCENTS))
HISTORY_HEADER = ("Timestamp,User Count,Type,Name,Requests/s,Failures/s," + ",".join(PERCENTS) +
                  ",Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
                  "Total Min Response Time,Total Max Response Time,Total Average Content Size")
FAILURES_HEADER = "Method,Name,Error,Occurrences,First Seen,Last Seen"
CHART_FILES = [name for name, _ in markdown.CHARTS]


# ------------------------------------------------------------------------------------------ crafted runs


def stats_line(method: str, name: str, requests: int, failures: int = 0, p50: float = 10, p95: float = 20,
               p99: float = 30, rps: float = 10.0) -> str:
    if requests == 0:  # what Locust writes for an entry without requests
        return f"{method},{name},0,0,0,0.0,0,0,0.0,0.0,0.0," + ",".join(["N/A"] * len(PERCENTS))
    top = max(p50, p95, p99) + 5  # the maximum is never below a percentile (the one percentile rule clamps to it)
    pct = [p50, p50, p50, p95, p95, p95, p99, p99, p99, p99, top]
    return (f"{method},{name},{requests},{failures},{p50},{p50 * 1.1},{p50 / 2},{top},300.0,{rps},"
            f"{rps * failures / requests}," + ",".join(f"{v:g}" for v in pct))


def history_lines(start: int, seconds: int, names: list[str], users: int = 5, na_first: int = 1) -> list[str]:
    """Full-history rows like Locust's: N/A percentiles before the first request, zeros until the window fills."""
    lines = []
    for i in range(seconds):
        ts = start + i
        total = 10 * i
        for name in names:
            pct = "0," * 11 if i < 3 else "10,11,12,13,15,20,25,30,40,40,40,"
            lines.append(f"{ts},{users},GET,{name},5.0,0.0,{pct}{total},0,10,11.0,2,40,300.0")
        if i < na_first:
            pct = "N/A," * 11
        elif i < 3:
            pct = "0," * 11
        else:
            pct = "10,11,12,13,15,20,25,30,40,40,40,"
        lines.append(f"{ts},{users if i else 0},,Aggregated,{5.0 * len(names)},0.0,{pct}"
                     f"{total * len(names)},0,10,11.0,2,40,300.0")
    return lines


def write_run(folder: Path, endpoints: list[str], *, history: list[str] | None = None,
              failures: list[str] = (), summary: dict | None = None, seconds: int = 30) -> Path:
    """A run folder in Locust's exact CSV formats; `endpoints` are stats_line() rows without the total."""
    folder.mkdir(parents=True, exist_ok=True)
    requests = sum(int(line.split(",")[2]) for line in endpoints)
    fails = sum(int(line.split(",")[3]) for line in endpoints)
    total = stats_line("", "Aggregated", requests, fails, 12, 25, 35, 30.0) if requests else \
        stats_line("", "Aggregated", 0)
    (folder / results.STATS_CSV).write_text("\n".join([STATS_HEADER, *endpoints, total]) + "\n")
    names = [line.split(",")[1] for line in endpoints if int(line.split(",")[2]) > 0]
    if history is None:
        history = history_lines(1_795_600_000, seconds, names)
    (folder / results.HISTORY_CSV).write_text("\n".join([HISTORY_HEADER, *history]) + "\n")
    (folder / results.FAILURES_CSV).write_text("\n".join([FAILURES_HEADER, *failures]) + "\n")
    if summary is not None:
        (folder / results.SUMMARY_JSON).write_text(json.dumps(summary))
    return folder


def basic_run(folder: Path, **kwargs) -> Path:
    return write_run(folder, [stats_line("GET", "Get_All_Products", 100, 2, p50=10, p95=20, p99=30, rps=10),
                              stats_line("POST", "Buy_Product", 50, 0, p50=15, p95=40, p99=60, rps=5)], **kwargs)


def run_process(*args: str) -> subprocess.CompletedProcess:
    """The real command line, as run_tests.sh calls it."""
    return subprocess.run([sys.executable, str(ROOT / "analyze_results.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """main() in-process (fast: no interpreter start); any escaping exception fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = ar.main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess, must_name: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert must_name in lines[0]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of a PNG that really decodes."""
    image = matplotlib.image.imread(path)
    return image.shape[1], image.shape[0]


def figure_texts(fig) -> list[str]:
    texts = [t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text"))]
    return [t for t in texts if t]


# ------------------------------------------------------------------------------------------ real runs


LOCUSTFILE = textwrap.dedent('''
    from locust import FastHttpUser, constant, task

    class Shopper(FastHttpUser):
        wait_time = constant(0.1)

        @task(4)
        def browse_all_products(self):
            self.client.get("/products", name="Get_All_Products")

        @task(2)
        def get_products_by_category(self):
            self.client.get("/products/category?category=Books", name="Get_Products_By_Category_Books")

        @task(2)
        def get_product_details(self):
            with self.client.post("/products/details", json={"name": "No Such Product"},
                                  name="Details_Unknown_Product", catch_response=True) as resp:
                if resp.status_code == 404:
                    resp.success()

        @task(1)
        def wrong_method(self):
            self.client.get("/products/buy", name="Wrong_Method")  # never 2xx: a failure in every run
''')


def locust_run(tmp: Path, url: str, out: Path, seconds: int = 5) -> Path:
    """A real headless Locust run writing the CSVs and HTML report into `out`."""
    out.mkdir(parents=True)
    locustfile = tmp / "shop_locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", url, "--headless", "-u", "5", "-r", "5",
           "-t", f"{seconds}s", "--csv", str(out / "stats"), "--csv-full-history", "--html", str(out / "report.html"),
           "--exit-code-on-error", "0", "--only-summary", "--loglevel", "WARNING"]
    result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Two real runs against the reference service: a fast one and one with 80-100 ms injected latency."""
    tmp = tmp_path_factory.mktemp("real_runs")
    runs = {}
    for label, flags in (("fast", ()), ("slow", ("--latency-ms", "80:100"))):
        service = start_service(tmp, *flags)
        try:
            runs[label] = locust_run(tmp, service.url, tmp / label)
        finally:
            service.stop()
    return runs


@pytest.mark.e2e
def test_real_run_gets_readable_charts_and_a_markdown_summary(real_runs, tmp_path, capsys):
    run_dir = shutil.copytree(real_runs["fast"], tmp_path / "run")
    assert ar.main([str(run_dir)]) == 0
    printed = capsys.readouterr().out
    for name in ("Get_All_Products", "Get_Products_By_Category_Books", "Details_Unknown_Product", "Wrong_Method",
                 "Total"):
        assert name in printed

    for chart in CHART_FILES:
        width, height = png_size(run_dir / chart)
        assert width == 1000 and 500 <= height <= 2000, (chart, width, height)
    summary = (run_dir / results.SUMMARY_MD).read_text()
    assert summary.startswith("# Load test run ")
    assert "| Get_All_Products |" in summary and "| Total |" in summary
    for chart in CHART_FILES:
        assert f"]({chart})" in summary
    assert "Wrong_Method" in summary.split("## Failures")[1]

    run = results.load_run(run_dir)
    tl, bin_s = results.timeline(run.history)
    assert bin_s == 1 and tl["rps"].dropna().gt(0).sum() >= 2
    assert len(rc.response_times_figure(tl, bin_s).axes) == 2  # percentiles + users axis
    assert len(rc.throughput_figure(tl, bin_s).axes) == 2  # rates + users axis
    assert len(rc.endpoint_percentiles_figure(run.endpoints).axes) == 1
    failures_fig = rc.failures_figure(run.failures)
    assert len(failures_fig.axes) == 1
    assert any("Wrong_Method" in label.get_text() for label in failures_fig.axes[0].get_yticklabels())


@pytest.mark.e2e
def test_compare_real_runs_flags_injected_latency_and_not_its_removal(real_runs, tmp_path):
    # Failure-rate noise between two short runs is not what this test is about.
    loose_failures = ("--tolerance-failure-rate", "50")
    slower = run_process("--compare", real_runs["fast"], real_runs["slow"], "--out", tmp_path / "worse",
                         *loose_failures)
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert "Get_All_Products" in slower.stdout and "REGRESSED" in slower.stdout
    assert "regression(s)" in (tmp_path / "worse" / results.COMPARE_MD).read_text()
    width, height = png_size(tmp_path / "worse" / "chart_compare.png")
    assert width == 1300 and height >= 500

    faster = run_cli("--compare", real_runs["slow"], real_runs["fast"], "--out", tmp_path / "better", *loose_failures)
    assert faster.returncode == 0, faster.stdout + faster.stderr
    assert "No regression" in (tmp_path / "better" / results.COMPARE_MD).read_text()

    same = run_cli("--compare", real_runs["fast"], real_runs["fast"], "--out", tmp_path / "same")
    assert same.returncode == 0, same.stdout + same.stderr


# ------------------------------------------------------------------------------------------ bad input


def test_missing_folder_is_a_one_line_error_from_the_real_command(tmp_path):
    assert_one_line_error(run_process(tmp_path / "nope"), "nope")


def test_missing_history_file_names_the_file(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    (run_dir / results.HISTORY_CSV).unlink()
    assert_one_line_error(run_cli(run_dir), results.HISTORY_CSV)


def test_header_only_stats_csv_is_an_empty_run_error(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    (run_dir / results.STATS_CSV).write_text(STATS_HEADER + "\n")
    result = run_cli(run_dir)
    assert_one_line_error(result, results.STATS_CSV)
    assert "no requests" in result.stderr


def test_run_with_zero_requests_is_an_empty_run_error(tmp_path):
    run_dir = write_run(tmp_path / "run", [], history=history_lines(1_795_600_000, 3, []))
    result = run_cli(run_dir)
    assert_one_line_error(result, results.STATS_CSV)
    assert "no requests" in result.stderr


def test_zero_byte_csv_is_an_error(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    (run_dir / results.FAILURES_CSV).write_text("")
    assert_one_line_error(run_cli(run_dir), results.FAILURES_CSV)


@pytest.mark.parametrize("csv_name", [results.STATS_CSV, results.HISTORY_CSV])
def test_truncated_csv_is_an_error_naming_the_file(tmp_path, csv_name):
    run_dir = basic_run(tmp_path / "run")
    text = (run_dir / csv_name).read_text()
    (run_dir / csv_name).write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # cut mid-line
    result = run_cli(run_dir)
    assert_one_line_error(result, csv_name)
    assert "truncated" in result.stderr


def test_truncated_line_in_the_middle_is_detected(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    lines = (run_dir / results.HISTORY_CSV).read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:8])
    (run_dir / results.HISTORY_CSV).write_text("\n".join(lines) + "\n")
    result = run_cli(run_dir)
    assert_one_line_error(result, results.HISTORY_CSV)
    assert "line 6" in result.stderr


def test_non_locust_csv_is_an_error(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    (run_dir / results.STATS_CSV).write_text("id,price,colour\n1,9.99,red\n2,12.50,blue\n")
    result = run_cli(run_dir)
    assert_one_line_error(result, results.STATS_CSV)
    assert "not a Locust CSV" in result.stderr


def test_text_in_a_numeric_column_is_an_error(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    text = (run_dir / results.STATS_CSV).read_text().replace("GET,Get_All_Products,100,", "GET,Get_All_Products,lots,")
    (run_dir / results.STATS_CSV).write_text(text)
    assert_one_line_error(run_cli(run_dir), results.STATS_CSV)


def test_binary_file_is_an_error_from_the_real_command(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    (run_dir / results.HISTORY_CSV).write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 50 + b"\n")
    assert_one_line_error(run_process(run_dir), results.HISTORY_CSV)


def test_broken_summary_json_is_an_error(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    (run_dir / results.SUMMARY_JSON).write_text('{"run_id": ')
    assert_one_line_error(run_cli(run_dir), results.SUMMARY_JSON)


@pytest.mark.parametrize("args", [[], ["a", "--compare", "b", "c"], ["--compare", "only-one"],
                                  ["--compare", "a", "b", "--tolerance", "ten"], ["x", "--out", "y"]])
def test_usage_errors_exit_2(args):
    result = run_process(*args) if not args else run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------ crafted content


def test_endpoint_never_called_is_shown_as_not_called_not_nan(tmp_path):
    summary = {"run_id": "20261125T140000Z", "endpoints": [
        {"name": "Update_Product_Stock", "method": "PATCH", "requests": 0, "failures": 0, "p50_ms": None}]}
    run_dir = write_run(tmp_path / "run", [stats_line("GET", "Get_All_Products", 100),
                                           stats_line("POST", "Buy_Product", 0)], summary=summary)
    assert ar.main([str(run_dir)]) == 0
    summary_md = (run_dir / results.SUMMARY_MD).read_text()
    assert "| Buy_Product | 0 | 0 | - | not called |" in summary_md
    assert "| Update_Product_Stock | 0 | 0 | - | not called |" in summary_md
    assert "nan" not in summary_md.lower()

    run = results.load_run(run_dir)
    fig = rc.endpoint_percentiles_figure(run.endpoints)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "Buy_Product (not called)" in labels and "Update_Product_Stock (not called)" in labels
    assert not any("nan" in text.lower() for text in figure_texts(fig))
    assert png_size(run_dir / "chart_endpoint_percentiles.png")[1] >= 500


def test_na_and_zero_percentiles_early_in_history_are_gaps_not_zeros(tmp_path):
    run_dir = basic_run(tmp_path / "run")
    run = results.load_run(run_dir)
    assert run.history["p95_ms"].iloc[:3].isna().all()  # N/A row, then zero-filled rows before the window fills
    assert (run.history["p95_ms"].iloc[3:] == 20).all()
    tl, bin_s = results.timeline(run.history)
    fig = rc.response_times_figure(tl, bin_s)
    assert len(fig.axes) == 2
    assert not any("nan" in text.lower() for text in figure_texts(fig))
    assert ar.main([str(run_dir)]) == 0


def test_history_with_aggregated_rows_only_still_charts(tmp_path):
    history = [line for line in history_lines(1_795_600_000, 20, ["Get_All_Products", "Buy_Product"])
               if ",Aggregated," in line]
    run_dir = basic_run(tmp_path / "run", history=history)
    assert ar.main([str(run_dir)]) == 0
    assert png_size(run_dir / "chart_throughput.png") == (1000, 500)


def test_rates_come_from_cumulative_counts_per_second(tmp_path):
    run = results.load_run(basic_run(tmp_path / "run"))
    tl, _ = results.timeline(run.history)
    assert tl["rps"].dropna().eq(20.0).all()  # two names, 10 more requests each per second
    assert len(tl) == 30


def test_no_failures_gives_a_clear_no_failures_chart_and_says_so(tmp_path):
    run_dir = write_run(tmp_path / "run", [stats_line("GET", "Get_All_Products", 100)])
    assert ar.main([str(run_dir)]) == 0
    assert "No failures." in (run_dir / results.SUMMARY_MD).read_text()
    fig = rc.failures_figure(results.load_failures(run_dir / results.FAILURES_CSV))
    assert "No failures in this run" in figure_texts(fig)
    assert png_size(run_dir / "chart_failures.png") == (1000, 500)


def test_failure_chart_has_a_bar_per_endpoint_and_reason(tmp_path):
    failures = ['POST,Buy_Product,"CatchResponseError(\'expected 200, got 500\')",7,,',
                'POST,Buy_Product,"CatchResponseError(\'INSUFFICIENT_STOCK for a fresh product\')",3,,',
                "GET,Get_All_Products,LocustBadStatusCode(code=503),2,,"]
    run_dir = basic_run(tmp_path / "run", failures=failures)
    assert ar.main([str(run_dir)]) == 0
    fig = rc.failures_figure(results.load_failures(run_dir / results.FAILURES_CSV))
    ticks = sorted(fig.axes[0].get_yticklabels(), key=lambda t: -t.get_position()[1])
    top_down = [t.get_text() for t in ticks]  # the most frequent failure is drawn at the top
    assert top_down == ["Buy_Product\nexpected 200, got 500", "Buy_Product\nINSUFFICIENT_STOCK for a fresh product",
                        "Get_All_Products\nHTTP 503 (unexpected status)"]
    assert "| POST Buy_Product | expected 200, got 500 | 7 |" in (run_dir / results.SUMMARY_MD).read_text()


def test_summary_md_shows_thresholds_oracle_and_custom_stats(tmp_path):
    summary = {
        "run_id": "20261125T140000Z", "host": "http://127.0.0.1:8082", "duration_s": 3725.0, "interrupted": False,
        "users": {"peak": 10, "final": 10},
        "thresholds": [{"metric": "p95_ms", "scope": "total", "limit": 1000, "observed": 25.0, "passed": True},
                       {"metric": "error_rate", "scope": "Buy_Product", "limit": 0.01, "observed": 0.2,
                        "passed": False}],
        "consistency": {"enabled": True, "passed": False, "products_checked": 20, "inconclusive": 1,
                        "violations": [{"product": "Cookbook: Global Cuisine", "kind": "lost_update",
                                        "message": "two buys saw remainingStock 7", "evidence": []}],
                        "dropped_records": 0},
        "custom_stats": {"buys": {"succeeded": 40, "insufficient_stock": 3}, "cache_refreshes": 2,
                         "validation_failures": {}},
        "verdict": {"passed": False, "exit_code": 1, "reasons": ["error_rate Buy_Product 0.2 > 0.01"]},
    }
    run_dir = basic_run(tmp_path / "run", summary=summary)
    assert ar.main([str(run_dir)]) == 0
    md = (run_dir / results.SUMMARY_MD).read_text()
    assert md.startswith("# Load test run 20261125T140000Z")
    assert "**Host:** http://127.0.0.1:8082" in md and "**Duration:** 1 h 02 min 05 s" in md
    assert "❌ failed (exit 1)" in md and "error_rate Buy_Product 0.2 \\> 0.01" in md  # Markdown-escaped: shows ">"
    assert "| ✅ | p95_ms | total | 1,000 ms | 25 ms |" in md  # the console's digits and units
    assert "| ❌ | error_rate | Buy_Product | 1.00% | 20.00% |" in md  # rates as percentages everywhere
    assert "❌ **failed**: 20 products checked" in md and "lost_update" in md
    assert "| buys.succeeded | 40 |" in md and "| cache_refreshes | 2 |" in md
    assert "| validation_failures | none |" in md and "{}" not in md  # empty stats never read as {}


# ------------------------------------------------------------------------------------------ compare (crafted)


def compare(tmp_path: Path, base: list[str], cur: list[str], *args: str) -> tuple[int, str]:
    base_dir = write_run(tmp_path / "base", base)
    cur_dir = write_run(tmp_path / "cur", cur)
    result = run_cli("--compare", base_dir, cur_dir, *args)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout


def test_compare_identical_runs_exits_0(tmp_path):
    rows = [stats_line("GET", "Get_All_Products", 100, 1)]
    code, out = compare(tmp_path, rows, rows)
    assert code == 0 and "No regression" in out
    baseline, current = (results.load_run(tmp_path / d, with_history=False) for d in ("base", "cur"))
    comparison = comparison_module.compare_runs(baseline, current, comparison_module.Tolerances())
    assert comparison.regressions == [] and comparison.labels == ["Get_All_Products", "Total"]
    assert len(rc.compare_figure(comparison, comparison_module.METRICS).axes) == 2  # p95 bars + verdict grid
    assert png_size(tmp_path / "cur" / "chart_compare.png")[0] == 1300


def test_compare_improvement_exits_0(tmp_path):
    code, out = compare(tmp_path, [stats_line("GET", "Get_All_Products", 100, 5, p50=50, p95=100, p99=200, rps=10)],
                        [stats_line("GET", "Get_All_Products", 100, 0, p50=20, p95=40, p99=80, rps=20)])
    assert code == 0, out


def test_compare_p95_regression_beyond_tolerance_exits_1(tmp_path):
    code, out = compare(tmp_path, [stats_line("GET", "Get_All_Products", 100, p95=100)],
                        [stats_line("GET", "Get_All_Products", 100, p95=130)])
    assert code == 1
    assert "REGRESSED" in out
    md = (tmp_path / "cur" / results.COMPARE_MD).read_text()
    assert "- Get_All_Products p95: 100 → 130 (+30.0%)" in md


def test_compare_per_metric_tolerance_allows_the_change(tmp_path):
    base = [stats_line("GET", "Get_All_Products", 100, p95=100, p99=150)]
    cur = [stats_line("GET", "Get_All_Products", 100, p95=130, p99=150)]
    assert compare(tmp_path, base, cur, "--tolerance-p95", "50%")[0] == 0
    assert compare(tmp_path, base, cur, "--tolerance", "50%")[0] == 0
    assert compare(tmp_path, base, cur, "--tolerance", "50%", "--tolerance-p95", "20%")[0] == 1


def test_compare_tiny_absolute_latency_change_is_not_a_regression(tmp_path):
    code, out = compare(tmp_path, [stats_line("GET", "Health_Check", 100, p50=1, p95=2, p99=3)],
                        [stats_line("GET", "Health_Check", 100, p50=2, p95=4, p99=6)])
    assert code == 0, out
    assert compare(tmp_path, [stats_line("GET", "Health_Check", 100, p50=1, p95=2, p99=3)],
                   [stats_line("GET", "Health_Check", 100, p50=2, p95=4, p99=6)], "--min-delta-ms", "0")[0] == 1


def test_compare_throughput_drop_is_a_regression_and_a_rise_is_not(tmp_path):
    assert compare(tmp_path, [stats_line("GET", "Get_All_Products", 100, rps=50)],
                   [stats_line("GET", "Get_All_Products", 100, rps=40)])[0] == 1
    assert compare(tmp_path, [stats_line("GET", "Get_All_Products", 100, rps=40)],
                   [stats_line("GET", "Get_All_Products", 100, rps=80)])[0] == 0


def test_compare_failure_rate_uses_absolute_points(tmp_path):
    base = [stats_line("GET", "Get_All_Products", 1000, 1)]  # 0.1 %
    assert compare(tmp_path, base, [stats_line("GET", "Get_All_Products", 1000, 5)])[0] == 0  # 0.5 %: +0.4 pt
    assert compare(tmp_path, base, [stats_line("GET", "Get_All_Products", 1000, 30)])[0] == 1  # 3 %: +2.9 pt
    assert compare(tmp_path, base, [stats_line("GET", "Get_All_Products", 1000, 30)],
                   "--tolerance-failure-rate", "5")[0] == 0


def test_compare_lists_endpoints_present_in_only_one_run(tmp_path):
    code, out = compare(tmp_path, [stats_line("GET", "Get_All_Products", 100), stats_line("GET", "Old_Endpoint", 10)],
                        [stats_line("GET", "Get_All_Products", 100), stats_line("PATCH", "New_Endpoint", 10),
                         stats_line("POST", "Buy_Product", 0)])
    assert code == 0, out
    assert "Only in the baseline (not compared): Old_Endpoint" in out
    assert "Only in the current run (not compared): New_Endpoint" in out
    md = (tmp_path / "cur" / results.COMPARE_MD).read_text()
    assert "| Old_Endpoint |" not in md and "| Get_All_Products |" in md


def test_compare_needs_only_the_stats_csv_and_reports_bad_input(tmp_path):
    base_dir = write_run(tmp_path / "base", [stats_line("GET", "Get_All_Products", 100)])
    (base_dir / results.HISTORY_CSV).unlink()
    cur_dir = write_run(tmp_path / "cur", [stats_line("GET", "Get_All_Products", 100)])
    assert run_cli("--compare", base_dir, cur_dir).returncode == 0
    (cur_dir / results.STATS_CSV).write_text(STATS_HEADER + "\n")
    assert_one_line_error(run_cli("--compare", base_dir, cur_dir), str(cur_dir / results.STATS_CSV))


# ------------------------------------------------------------------------------------------ scale


@pytest.mark.e2e
def test_24_hour_full_history_is_analysed_with_downsampled_charts(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_analysis import generate_run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    rows = generate_run(tmp_path / "day", hours=24, endpoints=10)
    assert rows == 24 * 3600 * 11
    run, table = markdown.analyse(tmp_path / "day")
    assert len(run.history) == 24 * 3600  # only the Aggregated rows are kept
    tl, bin_s = results.timeline(run.history)
    assert bin_s == 120 and len(tl) <= results.MAX_PLOT_POINTS + 1
    assert "Endpoint_09" in table
    for chart in CHART_FILES:
        assert png_size(tmp_path / "day" / chart)[0] == 1000
    assert "24 h 00 min 00 s" in (tmp_path / "day" / results.SUMMARY_MD).read_text() or \
        "23 h 59 min 59 s" in (tmp_path / "day" / results.SUMMARY_MD).read_text()


def test_summary_md_shows_the_open_model_and_corrected_latency_beside_locusts(tmp_path):
    summary = {"run_id": "20261125T140000Z",
               "endpoints": [{"name": "Get_All_Products", "method": "GET", "requests": 100, "failures": 0,
                              "p50_ms": 4, "p95_ms": 9, "p99_ms": 12}],
               "totals": {"requests": 100, "p50_ms": 4, "p95_ms": 9, "p99_ms": 12},
               "open_model": {"met": False, "message": "target 200 rps, achieved 143 rps (service too slow for the open model)"},
               "corrected_latency": {"Get_All_Products": {"p50_ms": 5, "p95_ms": 480, "p99_ms": 990, "count": 100},
                                     "Aggregated": {"p50_ms": 5, "p95_ms": 480, "p99_ms": 990, "count": 100}}}
    run_dir = write_run(tmp_path / "run", [stats_line("GET", "Get_All_Products", 100)], summary=summary)
    assert ar.main([str(run_dir)]) == 0
    summary_md = (run_dir / results.SUMMARY_MD).read_text()
    assert "achieved 143 rps (service too slow for the open model)" in summary_md
    assert "| Get_All_Products | 100 | 4 / 5 | 9 / 480 | 12 / 990 |" in summary_md
    assert "| Aggregated | 100 | 4 / 5 | 9 / 480 | 12 / 990 |" in summary_md


def test_compare_does_not_judge_requests_with_too_few_samples_and_says_why(tmp_path):
    # The case from issue 16: p95 3 -> 10 ms on a request with 11 samples was flagged as a regression.
    base = [stats_line("GET", "Get_All_Products", 500, p50=2, p95=3, p99=4),
            stats_line("POST", "Buy_Product", 11, p50=2, p95=3, p99=4)]
    cur = [stats_line("GET", "Get_All_Products", 500, p50=2, p95=3, p99=4),
           stats_line("POST", "Buy_Product", 11, p50=8, p95=10, p99=40)]
    code, out = compare(tmp_path, base, cur)
    assert code == 0, out
    buy = next(line for line in out.splitlines() if line.startswith("Buy_Product"))
    assert "skipped: too few requests (baseline 11, current 11; minimum 50)" in buy
    assert "judged" in next(line for line in out.splitlines() if line.startswith("Get_All_Products"))
    md = (tmp_path / "cur" / results.COMPARE_MD).read_text()
    assert "Not judged (1): Buy_Product: too few requests" in md
    # The minimum is configurable: with 10 the same change is a regression.
    code, out = compare(tmp_path, base, cur, "--min-samples", "10")
    assert code == 1 and "REGRESSED" in next(line for line in out.splitlines() if line.startswith("Buy_Product"))


def test_compare_warns_when_the_runs_differ_in_load_host_or_duration(tmp_path):
    rows = [stats_line("GET", "Get_All_Products", 100)]
    base_summary = {"run_id": "base", "host": "http://a:1", "shape": "staged", "users": {"peak": 10},
                    "duration_s": 60.0, "client": "fast", "user_classes": ["ProductServiceUser"]}
    cur_summary = {**base_summary, "run_id": "cur", "host": "http://b:2", "users": {"peak": 50}, "duration_s": 300.0}
    write_run(tmp_path / "base", rows, summary=base_summary)
    write_run(tmp_path / "cur", rows, summary=cur_summary)
    result = run_cli("--compare", tmp_path / "base", tmp_path / "cur")
    warning = next(line for line in result.stdout.splitlines() if line.startswith("WARNING"))
    assert "peak users 10 vs 50" in warning and "host http://a:1 vs http://b:2" in warning
    assert "duration 60 s vs 300 s" in warning and "shape" not in warning
    assert "not comparable" in (tmp_path / "cur" / results.COMPARE_MD).read_text()
    write_run(tmp_path / "cur", rows, summary={**base_summary, "run_id": "cur", "duration_s": 62.0})
    assert "WARNING" not in run_cli("--compare", tmp_path / "base", tmp_path / "cur").stdout


def test_percentiles_follow_one_rule_in_every_output(tmp_path):
    # One or two samples: Locust's clamped median can sit above its rounded p95 bucket in the CSV.
    line = "GET,Health_Check,2,0,1.1,1.15,1.1,1.2,0.5,0.0,1,1,1,1,1,1,1,1,1,1,1.2"
    run_dir = write_run(tmp_path / "run", [line, stats_line("GET", "Get_All_Products", 100)])
    run = results.load_run(run_dir)
    row = run.endpoints.set_index("name").loc["Health_Check"]
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["p50_ms"] == pytest.approx(1.1)
    # summary.json's figures win, so summary.md shows the digits summary.json holds.
    summary = {"run_id": "r", "endpoints": [{"name": "Health_Check", "method": "GET", "requests": 2,
                                             "p50_ms": 1.1, "p95_ms": 1.1, "p99_ms": 1.2}]}
    write_run(tmp_path / "run", [line, stats_line("GET", "Get_All_Products", 100)], summary=summary)
    ar.main([str(tmp_path / "run")])
    md = (tmp_path / "run" / results.SUMMARY_MD).read_text()
    health = next(row for row in md.splitlines() if row.startswith("| Health_Check"))
    assert "| 1.1\\* | 1.1\\* | 1.2\\* |" in health  # few samples are marked (escaped: shown as 1.1*), and explained
    assert "\\* fewer than 20 requests" in md  # escaped, so Markdown shows the mark, not a list
