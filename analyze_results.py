"""Turn a Locust run folder into a table, charts and summary.md, or compare two runs for regressions.

Usage:
  .venv/bin/python analyze_results.py RESULTS_DIR
      Reads stats_stats.csv, stats_stats_history.csv, stats_failures.csv (and summary.json when
      present), prints the per-request table and writes chart_*.png and summary.md into RESULTS_DIR.
  .venv/bin/python analyze_results.py --compare BASELINE_DIR CURRENT_DIR [--tolerance 10%] [--out DIR]
      Compares p50/p95/p99, failure rate and requests/s per request name; writes compare.md and
      chart_compare.png into CURRENT_DIR (or --out) and exits 1 when a metric regressed beyond tolerance.

  .venv/bin/python analyze_results.py --history RESULTS_ROOT [--out DIR] [--recent 3] [tolerances as above]
      Reads every run folder under RESULTS_ROOT (summary.json, and capacity.json where the capacity finder
      ran), groups the comparable runs, finds the change points of p50/p95/p99, error rate, throughput,
      consistency and capacity per request (ruptures' PELT, kept when a significance test says p <= 0.001),
      writes history.md, history.json and history_g*_*.png into DIR (default RESULTS_ROOT/history) and exits
      1 when the latest run regressed: a change point within its last --recent runs moved a metric the wrong
      way beyond the tolerance (the same rules as compare mode, on the medians before and after the change).

Regression rules (compare mode), each metric judged on its own:
  p50/p95/p99  regressed when current is more than the tolerance (percent, --tolerance-p95 etc.,
               default --tolerance) above baseline AND at least --min-delta-ms (default 5 ms) above it,
               so 1 ms -> 2 ms is noise, not a 100% regression.
  failure rate regressed when it rose by more than --tolerance-failure-rate percentage POINTS
               (absolute, default 1.0): relative change is meaningless near zero (0.1% -> 0.2% is "+100%").
  requests/s   regressed when it DROPPED by more than the tolerance (percent) AND by at least
               --min-delta-rps (default 1.0 req/s). Only meaningful between runs of the same load profile.
Request names present (with at least one request) in only one run are listed, not compared; a request
with fewer than --min-samples requests (default 50) in either run is listed as not judged: its p95 is
noise. When the two runs differ in peak users, shape, host, client, user classes or duration (from
summary.json), a warning says the runs are not comparable.

Exit codes: 0 ok (or no regression), 1 regression, 2 bad input or usage (one-line message, no traceback).
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

# pandas and matplotlib take about a second to import: loaded after the arguments are checked, so a usage
# error answers at once (and `import analyze_results` stays cheap).
_LAZY = {"Tolerances": "loadsuite.reporting.compare", "run_compare": "loadsuite.reporting.compare",
         "run_history": "loadsuite.history",
         "CHARTS": "loadsuite.reporting.markdown", "analyse": "loadsuite.reporting.markdown",
         "SUMMARY_MD": "loadsuite.reporting.results", "InputError": "loadsuite.reporting.results"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def percent(text: str) -> float:
    """'10%' or '10' -> 10.0 (always percent)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r} (e.g. 10%)") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a percentage >= 0: {text!r}")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def positive(text: str) -> int:
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analyze_results.py", description="Tables, charts and summary.md for a Locust run; --compare for "
        "run-vs-run regressions (exit 1 on regression).",
        epilog="Failure-rate tolerance is absolute (percentage points); latency and req/s tolerances are relative.")
    parser.add_argument("results_dir", nargs="?", type=Path, help="run folder, e.g. results/latest")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BASELINE_DIR", "CURRENT_DIR"),
                        help="compare two run folders instead")
    parser.add_argument("--history", type=Path, metavar="RESULTS_ROOT",
                        help="the trend of every run under RESULTS_ROOT, with change points (exit 1: the latest run regressed)")
    parser.add_argument("--out", type=Path, help="where compare.md and chart_compare.png go (default CURRENT_DIR), "
                        "or history.md and its charts (default RESULTS_ROOT/history)")
    parser.add_argument("--recent", type=positive, default=3,
                        help="history: a change that started within the latest run's last N runs judges it (default 3)")
    parser.add_argument("--tolerance", type=percent, default=10.0, help="default relative tolerance (default 10%%)")
    for metric in ("p50", "p95", "p99", "rps"):
        parser.add_argument(f"--tolerance-{metric}", type=percent, help=f"{metric} tolerance (default --tolerance)")
    parser.add_argument("--tolerance-failure-rate", type=non_negative, default=1.0,
                        help="allowed rise of the failure rate in percentage POINTS (default 1.0)")
    parser.add_argument("--min-delta-ms", type=non_negative, default=5.0,
                        help="latency changes smaller than this are never regressions (default 5)")
    parser.add_argument("--min-samples", type=count, default=50,
                        help="requests with fewer requests than this in either run are not judged (default 50)")
    parser.add_argument("--min-delta-rps", type=non_negative, default=1.0,
                        help="req/s drops smaller than this are never regressions (default 1.0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.results_dir, args.compare, args.history)) != 1:
        parser.error("pass one of RESULTS_DIR, --compare BASELINE_DIR CURRENT_DIR or --history RESULTS_ROOT")
    if args.out is not None and args.results_dir is not None:
        parser.error("--out only applies to --compare and --history")
    from loadsuite.reporting.compare import Tolerances, run_compare
    from loadsuite.reporting.markdown import CHARTS, analyse
    from loadsuite.reporting.results import SUMMARY_MD, InputError
    try:
        if args.compare is not None or args.history is not None:
            tol = Tolerances(
                p50=args.tolerance if args.tolerance_p50 is None else args.tolerance_p50,
                p95=args.tolerance if args.tolerance_p95 is None else args.tolerance_p95,
                p99=args.tolerance if args.tolerance_p99 is None else args.tolerance_p99,
                rps=args.tolerance if args.tolerance_rps is None else args.tolerance_rps,
                failure_rate_points=args.tolerance_failure_rate,
                min_delta_ms=args.min_delta_ms, min_delta_rps=args.min_delta_rps, min_samples=args.min_samples)
            if args.history is not None:
                from loadsuite.history import run_history
                from loadsuite.history.trend import Settings
                code, text = run_history(args.history, Settings(tolerances=tol, recent=args.recent), args.out)
            else:
                code, text = run_compare(args.compare[0], args.compare[1], tol, args.out)
            print(text)
            return code
        run, table = analyse(args.results_dir)
        print(f"Run {run.run_id}: {int(run.total['requests'])} requests, {int(run.total['failures'])} failures")
        print(table)
        print(f"Wrote {SUMMARY_MD} and {len(CHARTS)} charts to {run.folder}")
        return 0
    except InputError as exc:
        print(f"analyze_results: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"analyze_results: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
