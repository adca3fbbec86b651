"""How often the default run catches a service that loses concurrent buys, and how often it passes a correct one.

Runs `./run_tests.sh headless USERS DURATION_S URL` (the shipped config.yaml otherwise) N times against a
reference service started with --unsafe-buy and N times against a correct one, each on a free port with a
fresh database, one run at a time, and prints the two rates:

    .venv/bin/python bench/detection.py                      # 20 + 20 runs of 60 s (about 45 minutes)
    .venv/bin/python bench/detection.py --runs 5 --duration 25

Detected = the oracle reported a violation (consistency.passed is false in summary.json). Passed = the run
exited 0. A benchmark, not a test: the issue asks for >= 19/20 detected and 20/20 passed.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, stop, wait_http  # noqa: E402

RUN_TIMEOUT_PAD_S = 120  # beyond the run's duration: start-up, stop_timeout, the oracle, the reports


def start(workdir: Path, command: list[str], flags: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port), "--db",
                             str(workdir / f"service-{port}.db"), "--reset", *flags],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc, timeout=30)
    return proc, url


def one_run(workdir: Path, command: list[str], flags: list[str], users: int, duration: int) -> dict:
    """One service, one default run against it: exit code, oracle verdict, violation counts."""
    proc, url = start(workdir, command, flags)
    results = workdir / "results"
    try:
        done = subprocess.run([str(ROOT / "run_tests.sh"), "headless", str(users), str(duration), url, "--no-analysis"],
                              cwd=ROOT, env={**_clean_env(), "RESULTS_ROOT": str(results)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=duration + RUN_TIMEOUT_PAD_S)
    finally:
        stop(proc)
    summary_path = results / "latest" / "summary.json"
    if not summary_path.exists():
        return {"exit": done.returncode, "oracle": None, "counts": {}, "error": done.stderr.strip()[-300:]}
    consistency = json.loads(summary_path.read_text(encoding="utf-8"))["consistency"]
    return {"exit": done.returncode, "oracle": consistency.get("passed"),
            "counts": consistency.get("violation_counts") or {}, "units": consistency.get("violation_units") or {}}


def _clean_env() -> dict[str, str]:
    import os
    drop = ("CONFIG_PATH", "PRODUCT_SERVICE_URL", "LOAD_SHAPE", "SERVICE_CLIENT", "THRESHOLDS", "RESULTS_ROOT")
    return {key: value for key, value in os.environ.items() if key not in drop}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs against each service (default 20)")
    parser.add_argument("--duration", type=int, default=60, help="seconds per run (default 60, the shipped default)")
    parser.add_argument("--users", type=int, default=10, help="users per run (default 10, the shipped default)")
    parser.add_argument("--service-command", default=f"{shlex.quote(sys.executable)} -m product_service",
                        help="how to start the reference service (default: this Python's -m product_service)")
    parser.add_argument("--unsafe-flags", default="--unsafe-buy", help="flags of the faulty service (default --unsafe-buy)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.duration < 5 or args.users < 1:
        print("bench: error: --runs >= 1, --duration >= 5 and --users >= 1 are needed", file=sys.stderr)
        return 2
    command = shlex.split(args.service_command)
    outcomes: dict[str, list[dict]] = {"unsafe": [], "correct": []}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="detection-") as tmp:
        for number in range(args.runs):
            for kind, flags in (("unsafe", shlex.split(args.unsafe_flags)), ("correct", [])):
                workdir = Path(tmp) / f"{kind}-{number}"
                workdir.mkdir()
                outcome = one_run(workdir, command, flags, args.users, args.duration)
                outcomes[kind].append(outcome)
                print(f"run {number + 1:>2} {kind:<8} exit {outcome['exit']} oracle "
                      f"{ {True: 'passed', False: 'FAILED', None: 'inconclusive'}[outcome['oracle']] } "
                      f"{outcome['counts']} {outcome.get('units', '')} {outcome.get('error', '')}", flush=True)
    detected = sum(o["oracle"] is False for o in outcomes["unsafe"])
    passed = sum(o["exit"] == 0 for o in outcomes["correct"])
    print(f"\n{args.users} users, {args.duration} s per run, {args.runs} runs each, {time.monotonic() - began:.0f} s in all")
    print(f"unsafe ({args.unsafe_flags}): oracle failed in {detected}/{args.runs} runs ({detected / args.runs:.0%})")
    print(f"correct: exit 0 in {passed}/{args.runs} runs ({passed / args.runs:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
