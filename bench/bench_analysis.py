"""Benchmark analyze_results.py on a synthetic 24-hour run (one history row per second per request name).

Usage: python bench/bench_analysis.py [--hours 24] [--endpoints 10] [--dir bench/out/analysis]
Prints the generation time, the analysis time (seconds, in a child process) and the child's peak RSS.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
PERCENT_COLUMNS = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
HISTORY_HEADER = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PERCENT_COLUMNS,
                  "Total Request Count", "Total Failure Count", "Total Median Response Time",
                  "Total Average Response Time", "Total Min Response Time", "Total Max Response Time",
                  "Total Average Content Size"]
STATS_HEADER = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
                "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
                *PERCENT_COLUMNS]


def generate_run(folder: Path, hours: float = 24.0, endpoints: int = 10, seed: int = 0) -> int:
    """Write Locust-format stats, full history and failures CSVs for a synthetic run; return history rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seconds = int(hours * 3600)
    start = 1_795_600_000
    names = [f"Endpoint_{i:02d}" for i in range(endpoints)] + ["Aggregated"]
    methods = ["GET"] * endpoints + [""]
    rows_per_s = len(names)
    n = seconds * rows_per_s
    ts = np.repeat(np.arange(start, start + seconds), rows_per_s)
    users = np.repeat(50 + (np.arange(seconds) // 3600) * 5, rows_per_s)
    rate = rng.uniform(8, 12, n).round(2)
    base = rng.uniform(10, 40, n)
    percentiles = np.column_stack([(base * f).round() for f in (1, 1.2, 1.3, 1.4, 1.8, 2.2, 2.6, 3, 4, 5, 6)])
    per_second = rng.integers(5, 15, n)
    counts = per_second.reshape(seconds, rows_per_s).cumsum(axis=0)
    counts[:, -1] = counts[:, :-1].sum(axis=1)
    fails = (counts // 100).reshape(-1)
    frame = pd.DataFrame(percentiles.astype(np.int64), columns=PERCENT_COLUMNS)
    frame.insert(0, "Timestamp", ts)
    frame.insert(1, "User Count", users)
    frame.insert(2, "Type", np.tile(methods, seconds))
    frame.insert(3, "Name", np.tile(names, seconds))
    frame.insert(4, "Requests/s", rate)
    frame.insert(5, "Failures/s", (rate / 100).round(2))
    frame["Total Request Count"] = counts.reshape(-1)
    frame["Total Failure Count"] = fails
    frame["Total Median Response Time"] = 20
    frame["Total Average Response Time"] = 21.5
    frame["Total Min Response Time"] = 2
    frame["Total Max Response Time"] = 400
    frame["Total Average Content Size"] = 2700.0
    frame[HISTORY_HEADER].to_csv(folder / "stats_stats_history.csv", index=False)

    final = counts[-1]
    stats = [[m, name, int(c), int(c // 100), 20, 21.5, 2, 400, 2700.0, c / seconds, (c // 100) / seconds,
              20, 24, 26, 28, 36, 44, 52, 60, 80, 100, 400] for m, name, c in zip(methods, names, final)]
    pd.DataFrame(stats, columns=STATS_HEADER).to_csv(folder / "stats_stats.csv", index=False)
    failures = [["GET", name, "CatchResponseError('expected 200, got 500')", int(c // 100), "", ""]
                for name, c in zip(names[:-1], final[:-1])]
    pd.DataFrame(failures, columns=["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]).to_csv(
        folder / "stats_failures.csv", index=False)
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out" / "analysis")
    args = parser.parse_args()
    began = time.perf_counter()
    rows = generate_run(args.dir, args.hours, args.endpoints)
    size_mb = (args.dir / "stats_stats_history.csv").stat().st_size / 1e6
    print(f"generated {rows} history rows ({size_mb:.0f} MB) in {time.perf_counter() - began:.1f} s")
    # A child process, so its peak RSS is the analysis alone: VmHWM (not ru_maxrss, which survives exec
    # and would include this generator's memory).
    code = ("import re, sys, time; sys.path.insert(0, sys.argv[1]); import analyze_results as a; "
            "t = time.perf_counter(); a.analyse(a.Path(sys.argv[2])); elapsed = time.perf_counter() - t; "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "print(f'analysis {elapsed:.2f} s, peak RSS {hwm / 1024:.0f} MB')")
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, str(ROOT), str(args.dir)], text=True, capture_output=True)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        print(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "analysis failed")
        return 1
    print(result.stdout.strip(), f"(process wall time incl. imports {wall:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
