"""What the run history's change-point detection costs and how well it tells a change from noise.

Usage: .venv/bin/python bench/history.py [--histories 500] [--out bench/out/history.json]
Prints, on synthetic series of weekly runs (log-normal noise, seeded):
- the cost: importing ruptures and scipy (a fresh interpreter), one series' detection at 30/100/500 runs,
  and a whole `analyze_results.py --history` on 52 runs of 4 request names (a child process);
- false alarms: the share of histories of 30 runs with no change that get a change point (Gaussian and
  heavy-tailed Student-t noise);
- detection: the share of steps at run 20 of 30 found at run 20 (and the share with another change point
  besides), by step size and noise;
- delay: the share of steps found with only 2, 3, 4 or 6 runs on the new level (and after a short level),
  of one wild last run taken for a change, and of slow drifts found.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from loadsuite.history.changepoints import find_changes  # noqa: E402

FLOOR = 0.01  # the floor the history uses for latencies (metrics.py)


def series(seed: int, runs: int, noise: float, heavy: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_t(3, runs) * noise / np.sqrt(3) if heavy else rng.normal(0, noise, runs)  # same sd
    return np.log(50.0) + e


def share(flags) -> float:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4)


def cost(histories: int) -> dict:
    code = "import time; t = time.perf_counter(); import ruptures, scipy.stats; print(time.perf_counter() - t)"
    imports = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
               for _ in range(3)]
    per_series = {}
    for runs in (30, 100, 500):
        repeats = max(3, min(50, histories // 10)) if runs < 500 else 3
        times = []
        for seed in range(repeats):
            x = series(seed, runs, 0.05)
            x[runs * 2 // 3:] += np.log(1.3)
            start = time.perf_counter()
            find_changes(x, floor=FLOOR)
            times.append(time.perf_counter() - start)
        per_series[runs] = round(statistics.median(times) * 1000, 2)
    from fake_history import noisy_factors, write_history
    with tempfile.TemporaryDirectory() as tmp:
        write_history(Path(tmp), noisy_factors(52, seed=1, step_at=40, step=0.3))
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "analyze_results.py"), "--history", tmp], check=False,
                       capture_output=True, timeout=300)
        whole = time.perf_counter() - start
    return {"import_ruptures_scipy_s": round(statistics.median(imports), 3), "detect_ms_by_runs": per_series,
            "analyze_history_52_runs_s": round(whole, 2)}


def quality(histories: int) -> dict:
    out: dict = {"false_alarm": {}, "step_at_20_of_30": {}, "delay": {}, "drift": {}}
    for noise in (0.05, 0.10):
        for heavy in (False, True):
            key = f"noise {noise:.0%}{' t3' if heavy else ''}"
            out["false_alarm"][key] = share(bool(find_changes(series(s, 30, noise, heavy), floor=FLOOR))
                                            for s in range(histories))
            for step in (0.1, 0.2, 0.3, 0.5):
                found = []
                for s in range(histories):
                    x = series(s, 30, noise, heavy)
                    x[19:] += np.log(1 + step)
                    found.append([c.index for c in find_changes(x, floor=FLOOR)])
                out["step_at_20_of_30"][f"{key}, +{step:.0%}"] = {
                    "found_at_20": share(19 in f for f in found),
                    "another_change_too": share(any(abs(i - 19) > 1 for i in f) for f in found)}
    for after in (2, 3, 4, 6):
        found = []
        for s in range(histories):
            x = series(s, 20 + after, 0.05)
            x[20:] += np.log(1.3)
            found.append(any(abs(c.index - 20) <= 1 for c in find_changes(x, floor=FLOOR)))
        out["delay"][f"+30% step, {after} runs on the new level"] = share(found)
    wild, short = [], []
    for s in range(histories):
        x = np.r_[series(s, 20, 0.05), np.log(100.0)]  # 20 quiet runs, then one at 2x
        wild.append(any(c.index >= 19 for c in find_changes(x, floor=FLOOR)))
        x = series(s, 31, 0.05)
        x[19:29] += np.log(0.75)  # 19 runs, 10 runs 25% faster, then 2 runs 60% slower than those
        x[29:] += np.log(0.75 * 1.6)
        short.append(any(c.index == 29 for c in find_changes(x, floor=FLOOR)))
    out["delay"]["one 2x run after 20 quiet ones (a false change)"] = share(wild)
    out["delay"]["+60% for 2 runs after a 10-run level"] = share(short)
    for per_run in (0.005, 0.01, 0.02):
        drift = np.log(1 + per_run) * np.arange(30)
        out["drift"][f"{per_run:.1%} a run over 30 runs, 5% noise"] = share(
            bool(find_changes(series(s, 30, 0.05) + drift, floor=FLOOR)) for s in range(histories))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/history.py", description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=500, help="synthetic histories per case (default 500)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "history.json")
    args = parser.parse_args()
    if args.histories < 10:
        parser.error("--histories must be at least 10")
    result = {"cost": cost(args.histories), "quality": quality(args.histories), "histories": args.histories}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
