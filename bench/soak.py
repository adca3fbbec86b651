"""Memory soak (a benchmark, not a CI test): the full suite at a steady rate for 10 minutes, RSS sampled each second.

Runs locustfile.py (all tasks, validators, cache, hooks, oracle) against the canned nginx (or the reference
service) at a constant request rate (the open model, load_shape.target_rps) and, at the same time and
rate, the bare FastHttpUser script with the same request mix as a baseline (Locust itself keeps a few
per-second counters per request name that it never trims). Samples both generators' RSS (psutil, the
process tree) every second and compares minute 1 with the last minute (median RSS of each).
Writes bench/out/soak.csv and bench/out/soak.json; exit 0 when the suite's growth is under --max-growth
(default 5 %), 1 otherwise.

    .venv/bin/python bench/soak.py [--minutes 10] [--rps 300] [--users 20] [--target nginx|service]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from run import bench_config, write_mix  # noqa: E402

ROOT = common.ROOT


def rss_mb(process: psutil.Process) -> float:
    total = 0
    for proc in (process, *process.children(recursive=True)):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--rps", type=float, default=300.0, help="steady total request rate (default 300)")
    parser.add_argument("--users", type=int, default=20, help="Locust users (default 20)")
    parser.add_argument("--client", choices=("fast", "requests"), default="fast")
    parser.add_argument("--target", choices=("nginx", "service"), default="nginx")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth, minute 1 to the end")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    if args.minutes < 2 or args.rps <= 0 or args.users < 1:
        common.fail("need --minutes >= 2, --rps > 0 and --users >= 1")
    seconds = int(args.minutes * 60)
    gen_core, target_core = common.cores()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        config_path, config = bench_config(work, args.target, target_rps=args.rps)
        target, url, products, _ = common.start_target(work, args.target, config, target_core)
        mix_path, _ = write_mix(work, products, config)
        env = {**os.environ, "CONFIG_PATH": str(config_path), "SERVICE_CLIENT": args.client,
               "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1", "BENCH_MIX": str(mix_path),
               "BENCH_USER_RPS": str(args.rps / args.users)}
        common_args = ["--headless", "-u", str(args.users), "-r", str(args.users), "-t", f"{seconds}s", "--host", url,
                       "--only-summary"]
        commands = {
            "suite": common.pinned(gen_core, [sys.executable, "-m", "locust", "-f", "locustfile.py", *common_args,
                                              "--csv", str(work / "stats"), "--results-dir", str(work)]),
            "bare": common.pinned(gen_core, [sys.executable, "-m", "locust", "-f",
                                             str(ROOT / "bench" / "locustfiles" / "bare_fast.py"), *common_args]),
        }
        print(f"soak: {args.minutes:g} min at {args.rps:g} req/s, {args.users} users, client {args.client}, "
              f"target {args.target} {url}; bare FastHttpUser alongside at the same rate", flush=True)
        samples: list[tuple[float, float, float]] = []
        logs = {name: open(work / f"{name}.log", "w", encoding="utf-8") for name in commands}
        procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logs[name], stderr=subprocess.STDOUT)
                 for name, cmd in commands.items()}
        watched = {name: psutil.Process(proc.pid) for name, proc in procs.items()}
        started = time.monotonic()
        try:
            while any(p.poll() is None for p in procs.values()) and time.monotonic() - started < seconds + 120:
                elapsed = time.monotonic() - started
                if elapsed <= seconds:
                    samples.append((elapsed, rss_mb(watched["suite"]), rss_mb(watched["bare"])))
                    if len(samples) % 60 == 0:
                        print(f"  {elapsed / 60:4.1f} min  RSS suite {samples[-1][1]:7.1f} MB, "
                              f"bare {samples[-1][2]:7.1f} MB", flush=True)
                time.sleep(1.0 - (time.monotonic() - started) % 1.0)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=60)
            for log in logs.values():
                log.close()
            common.stop(target)
        summary = json.loads((work / "summary.json").read_text()) if (work / "summary.json").exists() else {}
    def growth_of(column: int) -> tuple[float, float, float]:
        first = [row[column] for row in samples if 60 <= row[0] < 120]
        last = [row[column] for row in samples if row[0] >= seconds - 60]
        if not first or not last:
            common.fail("too few RSS samples: a Locust run ended early (see its output)", 1)
        return statistics.median(first), statistics.median(last), statistics.median(last) / statistics.median(first) - 1

    minute_1, minute_n, growth = growth_of(1)
    bare_1, bare_n, bare_growth = growth_of(2)
    totals = summary.get("totals", {})
    oracle = summary.get("consistency", {})
    result = {"minutes": args.minutes, "rps_target": args.rps, "users": args.users, "client": args.client,
              "target": args.target, "rss_minute_1_mb": round(minute_1, 1), "rss_last_minute_mb": round(minute_n, 1),
              "growth": round(growth, 4), "passed": growth < args.max_growth,
              "peak_rss_mb": round(max(row[1] for row in samples), 1),
              "bare_rss_minute_1_mb": round(bare_1, 1), "bare_rss_last_minute_mb": round(bare_n, 1),
              "bare_growth": round(bare_growth, 4), "suite_minus_bare_mb": round((minute_n - minute_1) - (bare_n - bare_1), 2),
              "requests": totals.get("requests"), "rps": totals.get("rps"),
              "oracle_dropped_records": oracle.get("dropped_records")}
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "soak.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["second", "suite_rss_mb", "bare_rss_mb"])
        writer.writerows((round(t, 1), round(suite, 2), round(bare, 2)) for t, suite, bare in samples)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nsoak: suite RSS minute 1 {minute_1:.1f} MB, last minute {minute_n:.1f} MB: growth {growth:+.1%} "
          f"({'under' if result['passed'] else 'NOT under'} {args.max_growth:.0%}); {result['requests']} requests "
          f"at {result['rps']} req/s")
    print(f"soak: bare FastHttpUser RSS {bare_1:.1f} -> {bare_n:.1f} MB: growth {bare_growth:+.1%}; the suite grew "
          f"{result['suite_minus_bare_mb']:+.2f} MB more than bare Locust")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
