"""Open-model benchmark: the suite's arrival-rate executor, its closed model and vegeta side by side on a stall.

Part 1, the stall: three reference services (`--latency-ms 10`), one per generator, and at the same time
vegeta (constant rate), the suite with `load_shape.target_rps` (the executor) and the suite's closed model
(10 users, a think time that gives the same rate while the service is healthy), all `GET /products` only.
At second 15 every service is frozen with SIGSTOP for 3 s, then SIGCONT. Prints each generator's p50/p95/p99
and requests sent versus scheduled; the targets: the executor's percentiles within 10 % of vegeta's (or
2 ms where below 20 ms) and at least 99 % of the scheduled requests sent.
Part 2, the hot path: the executor and the closed model side by side again, no stall, at the same rate
(below saturation), generator CPU per request over the steady window (bench/locustfiles/cpu_window.py),
with the event-loop passes and wake-ups per request beside it (`--idle-gaps`: the passes by how long the
loop was idle before each); target: the executor's within 10 % of the closed model's. `--count-calls` adds
a round that counts the function calls each model makes per request (cProfile; deterministic, unlike CPU
time on a shared VM); target: the executor's within 10 % of the closed model's.

    .venv/bin/python bench/open_model.py [--rate 100] [--duration 40] [--stall-at 15] [--stall 3] [--cpu-rounds 2]
                                         [--count-calls] [--idle-gaps] [--skip-stall]

Needs vegeta (exit 2 with one line if missing). Writes bench/out/open_model.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py; also puts the project root on sys.path)

ROOT = common.ROOT
VEGETA_INSTALL = "go install github.com/tsenart/vegeta/v12@v12.13.0 (it lands in ~/go/bin)"
CLOSED_USERS = 10
CPU_WINDOW = ROOT / "bench" / "locustfiles" / "cpu_window.py"


def find_vegeta() -> str:
    home_bin = Path.home() / "go" / "bin" / "vegeta"  # where `go install` puts it
    path = shutil.which("vegeta") or (home_bin if os.access(home_bin, os.X_OK) else None)
    if path is None:
        common.fail(f"vegeta not found; install it with: {VEGETA_INSTALL}")
    return str(path)


def suite_config(work: Path, name: str, target_rps: float | None, wait_s: float) -> Path:
    """A CONFIG_PATH: the executor at target_rps (or the closed model with wait_s think time); no thresholds,
    no oracle, no monitoring."""
    import yaml

    from config_loader import load_config, parse_config

    data = load_config(env={}).model_dump()
    # The closed model's think time is spread +-50 % like the shipped between(min, max): with one fixed value
    # its users stay in lockstep and share every event-loop wake-up, which no real closed-model run does.
    data["wait_time"] = {"min_seconds": wait_s * 0.5, "max_seconds": wait_s * 1.5}
    data["thresholds"].update({"error_rate": None, "p95_ms": None, "p99_ms": None, "avg_ms": None, "min_rps": None,
                               "per_request": {}, "consistency": False})
    data["oracle"]["enabled"] = False
    data["monitoring"]["influxdb"]["enabled"] = False
    data["load_shape"].update({"name": None, "target_rps": target_rps})
    config = parse_config(data, "bench config")
    path = work / f"config-{name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
    return path


def start_suite(work: Path, name: str, url: str, config: Path, seconds: int, users: int,
                probes: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CONFIG_PATH": str(config), "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1",
           "BENCH_WINDOW_OUT": str(folder / "window.json"), **(probes or {})}
    cmd = [sys.executable, "-m", "locust", "-f", f"locustfile.py,{CPU_WINDOW}", "--headless", "-u", str(users),
           "-r", str(users), "-t", f"{seconds}s", "--host", url, "--tags", "browse", "--csv", str(folder / "stats"),
           "--results-dir", str(folder), "--only-summary"]
    log = open(folder / "locust.log", "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, folder


def wait_spawned(folder: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "All users spawned" in (folder / "locust.log").read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    common.fail(f"the suite in {folder} did not start: {(folder / 'locust.log').read_text(errors='replace')[-600:]}")


def finish_suite(proc: subprocess.Popen, folder: Path, timeout: float) -> dict[str, Any]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    with open(folder / "stats_stats.csv", newline="", encoding="utf-8") as file:
        total = next(row for row in csv.DictReader(file) if row["Name"] == "Aggregated")
    number = lambda key: float(total[key]) if total.get(key) not in (None, "", "N/A") else None  # noqa: E731
    summary = json.loads((folder / "summary.json").read_text())
    open_model = summary.get("open_model") or {}
    window = json.loads((folder / "window.json").read_text()) if (folder / "window.json").exists() else {}
    gaps = window.get("idle_gaps")
    start, stop = window.get("start") or {}, window.get("stop") or {}
    window_requests = stop.get("requests", 0) - start.get("requests", 0)
    window_cpu = stop.get("cpu_s", 0.0) - start.get("cpu_s", 0.0)
    per_request = lambda key: (round((stop.get(key, 0) - start.get(key, 0)) / window_requests, 3)  # noqa: E731
                               if window_requests and key in start else None)
    return {"sent": int(total["Request Count"]), "failures": int(total["Failure Count"]),
            "scheduled": open_model.get("scheduled"), "dropped": open_model.get("dropped"),
            "lateness_ms": open_model.get("lateness_ms"),
            "p50_ms": number("50%"), "p95_ms": number("95%"), "p99_ms": number("99%"), "max_ms": number("100%"),
            "window_requests": window_requests, "window_cpu_s": round(window_cpu, 3),
            "cpu_ms_per_request": round(window_cpu * 1000 / window_requests, 4) if window_requests else None,
            "loop_passes_per_request": per_request("loop_passes"), "wakeups_per_request": per_request("wakeups"),
            "calls_per_request": per_request("calls"),
            "idle_gaps_per_request": ({"edges_ms": gaps["edges_ms"], "counts": [round(count / window_requests, 3)
                                                                            for count in gaps["counts"]]}
                                      if gaps and window_requests else None)}


def run_vegeta(vegeta: str, url: str, rate: float, seconds: int, out: Path) -> subprocess.Popen:
    target = out.parent / "vegeta-targets.txt"
    target.write_text(f"GET {url}/products\n")
    return subprocess.Popen([vegeta, "attack", f"-rate={rate:g}/s", f"-duration={seconds}s", "-timeout=30s",
                             f"-targets={target}", f"-output={out}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def vegeta_report(vegeta: str, results: Path, rate: float, seconds: int) -> dict[str, Any]:
    done = subprocess.run([vegeta, "report", "-type=json", str(results)], capture_output=True, text=True, timeout=60)
    data = json.loads(done.stdout)
    latencies = data["latencies"]
    ms = lambda key: round(latencies[key] / 1e6, 1)  # noqa: E731  (nanoseconds)
    codes = data.get("status_codes") or {}
    return {"sent": data["requests"], "scheduled": int(rate * seconds), "failures": data["requests"] - codes.get("200", 0),
            "p50_ms": ms("50th"), "p95_ms": ms("95th"), "p99_ms": ms("99th"), "max_ms": ms("max")}


def stall_part(args, work: Path, vegeta: str) -> dict[str, Any]:
    services = {name: common.start_service(work, "--latency-ms", str(args.latency_ms))
                for name in ("vegeta", "open", "closed")}
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        open_config = suite_config(work, "open", args.rate, 0.5)
        closed_wait = max(0.0, CLOSED_USERS / args.rate - args.latency_ms / 1000.0)
        closed_config = suite_config(work, "closed", None, closed_wait)
        procs["open"] = start_suite(work, "stall-open", services["open"][1], open_config, args.duration, CLOSED_USERS)
        procs["closed"] = start_suite(work, "stall-closed", services["closed"][1], closed_config, args.duration,
                                      CLOSED_USERS)
        for proc, folder in procs.values():
            wait_spawned(folder, proc)
        results = work / "vegeta.bin"
        attack = run_vegeta(vegeta, services["vegeta"][1], args.rate, args.duration, results)
        started = time.monotonic()
        time.sleep(args.stall_at)
        for proc, _ in services.values():
            os.kill(proc.pid, signal.SIGSTOP)
        print(f"  stall: services frozen at second {time.monotonic() - started:.1f}", flush=True)
        try:
            time.sleep(args.stall)
        finally:
            for proc, _ in services.values():
                os.kill(proc.pid, signal.SIGCONT)
        _, err = attack.communicate(timeout=args.duration + 60)
        if attack.returncode != 0:
            common.fail(f"vegeta attack exited {attack.returncode}: {err.decode(errors='replace')[-300:]}")
        out = {"vegeta": vegeta_report(vegeta, results, args.rate, args.duration)}
        for name, (proc, folder) in procs.items():
            out[f"suite_{name}"] = finish_suite(proc, folder, args.duration + 90)
        out["suite_closed"]["scheduled"] = None
        return out
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for proc, _ in services.values():
            os.kill(proc.pid, signal.SIGCONT)
            common.stop(proc)


def side_by_side(args, work: Path, configs: dict[str, Path], tag: str, probes: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """One round: the executor and the closed model at the same time, each against its own service."""
    services = {name: common.start_service(work, "--latency-ms", str(args.latency_ms)) for name in configs}
    try:
        procs = {name: start_suite(work, f"{tag}-{name}", services[name][1], config, args.cpu_duration, CLOSED_USERS,
                                   probes)
                 for name, config in configs.items()}
        return {name: finish_suite(proc, folder, args.cpu_duration + 90) for name, (proc, folder) in procs.items()}
    finally:
        for proc, _ in services.values():
            common.stop(proc)


def cpu_part(args, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The executor and the closed model at the same time, same rate, no stall: CPU per request each
    (`--cpu-rounds` rounds), then with `--count-calls` one more round that counts function calls per request."""
    rounds = []
    configs = {"open": suite_config(work, "cpu-open", args.rate, 0.5),
               "closed": suite_config(work, "cpu-closed", None,
                                      max(0.0, CLOSED_USERS / args.rate - args.latency_ms / 1000.0))}
    for round_no in range(args.cpu_rounds):
        result = side_by_side(args, work, configs, f"cpu{round_no}",
                              {"BENCH_IDLE_GAPS": "1"} if args.idle_gaps else None)
        opened, closed = result["open"], result["closed"]
        ratio = (opened["cpu_ms_per_request"] / closed["cpu_ms_per_request"]
                 if opened["cpu_ms_per_request"] and closed["cpu_ms_per_request"] else None)
        rounds.append({**result, "ratio": round(ratio, 3) if ratio else None})
        print(f"  cpu round {round_no + 1}: open {opened['cpu_ms_per_request']} ms, closed "
              f"{closed['cpu_ms_per_request']} ms of CPU per request "
              f"({opened['window_requests']} / {closed['window_requests']} requests): ratio {ratio:.3f}; "
              f"event-loop passes per request {opened['loop_passes_per_request']} / "
              f"{closed['loop_passes_per_request']}, wake-ups {opened['wakeups_per_request']} / "
              f"{closed['wakeups_per_request']}" if ratio else "  cpu round: no window", flush=True)
        if args.idle_gaps and opened["idle_gaps_per_request"] and closed["idle_gaps_per_request"]:
            edges = opened["idle_gaps_per_request"]["edges_ms"]
            labels = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">{edges[-1]:g}"]
            print("    event-loop passes per request by the idle time before them (ms): " + ", ".join(
                f"{label} {a}/{b}" for label, a, b in zip(labels, opened["idle_gaps_per_request"]["counts"],
                                                           closed["idle_gaps_per_request"]["counts"])), flush=True)
    calls = None
    if args.count_calls:
        result = side_by_side(args, work, configs, "calls", {"BENCH_COUNT_CALLS": "1"})
        opened, closed = result["open"]["calls_per_request"], result["closed"]["calls_per_request"]
        calls = {"open": opened, "closed": closed, "ratio": round(opened / closed, 3) if opened and closed else None}
        print(f"  function calls per request (cProfile, one round): open {opened}, closed {closed}: "
              f"ratio {calls['ratio']}", flush=True)
    return rounds, calls


def within(suite: float | None, reference: float | None) -> bool:
    """The benchmark's accuracy rule: within 10 % of vegeta's, or within 2 ms where vegeta's is below 20 ms."""
    if suite is None or reference is None:
        return False
    if reference < 20:
        return abs(suite - reference) <= 2
    return abs(suite - reference) <= 0.1 * reference


def table(stall: dict[str, Any]) -> str:
    lines = ["| generator | scheduled | sent | sent / scheduled | p50 ms | p95 ms | p99 ms | max ms | failures |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("vegeta", "suite_open", "suite_closed"):
        r = stall[name]
        scheduled = r.get("scheduled")
        share = f"{r['sent'] / scheduled:.1%}" if scheduled else "-"
        lines.append(f"| {name} | {scheduled if scheduled is not None else '-'} | {r['sent']:,} | {share} | "
                     f"{_f(r['p50_ms'])} | {_f(r['p95_ms'])} | {_f(r['p99_ms'])} | {_f(r['max_ms'])} | {r['failures']} |")
    return "\n".join(lines)


def _f(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--duration", type=int, default=40, help="seconds of the stall run (default 40)")
    parser.add_argument("--stall-at", type=float, default=15.0, help="second at which the services freeze (default 15)")
    parser.add_argument("--stall", type=float, default=3.0, help="seconds frozen (default 3)")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="the services' fixed latency (default 10)")
    parser.add_argument("--cpu-duration", type=int, default=20, help="seconds per CPU round (default 20)")
    parser.add_argument("--cpu-rounds", type=int, default=2, help="CPU rounds, 0 skips (default 2)")
    parser.add_argument("--count-calls", action="store_true",
                        help="one more round that counts function calls per request (cProfile) in each model")
    parser.add_argument("--idle-gaps", action="store_true",
                        help="in the CPU rounds, count event-loop passes by how long the loop was idle before them")
    parser.add_argument("--skip-stall", action="store_true", help="only the CPU rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="folder for open_model.json")
    args = parser.parse_args()
    vegeta = find_vegeta()
    if args.rate <= 0 or args.duration < 10 or not 0 < args.stall_at < args.duration - args.stall:
        common.fail("need --rate > 0, --duration >= 10 and the stall inside the run")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-open-") as tmp:
        work = Path(tmp)
        print(f"open model: {args.rate:g} req/s for {args.duration} s, GET /products, services --latency-ms "
              f"{args.latency_ms:g}, frozen {args.stall:g} s at second {args.stall_at:g}; load average "
              f"{load_before[0]:.2f}", flush=True)
        stall = None if args.skip_stall else stall_part(args, work, vegeta)
        cpu, calls = cpu_part(args, work)
    if stall is None:
        ratios = [r["ratio"] for r in cpu if r["ratio"]]
        print(f"CPU per request, executor / closed model: {statistics.median(ratios):.3f}" if ratios else "no CPU rounds")
        if calls and calls["ratio"]:
            print(f"function calls per request, executor / closed model: {calls['ratio']:.3f}")
        return 0
    ref, suite = stall["vegeta"], stall["suite_open"]
    checks = {f"{key} within 10 % / 2 ms of vegeta": within(suite[key], ref[key]) for key in ("p50_ms", "p95_ms", "p99_ms")}
    checks["sent >= 99 % of scheduled"] = bool(suite["scheduled"]) and suite["sent"] >= 0.99 * suite["scheduled"]
    ratios = [r["ratio"] for r in cpu if r["ratio"]]
    cpu_ratio = statistics.median(ratios) if ratios else None
    if cpu_ratio is not None:
        checks["CPU per request within 10 % of the closed model's"] = cpu_ratio <= 1.10
    if calls and calls["ratio"]:
        checks["function calls per request within 10 % of the closed model's"] = calls["ratio"] <= 1.10
    text = table(stall)
    print("\n" + text + "\n")
    late = suite.get("lateness_ms") or {}
    print(f"suite_open: dropped {suite.get('dropped')}, start lateness p50/p99/max {late.get('p50')}/{late.get('p99')}/"
          f"{late.get('max')} ms")
    if cpu_ratio is not None:
        print(f"CPU per request, executor / closed model (median of {len(ratios)} rounds): {cpu_ratio:.3f}")
    if calls and calls["ratio"]:
        print(f"function calls per request, executor / closed model: {calls['ratio']:.3f}")
    for label, ok in checks.items():
        print(f"- {label}: {'met' if ok else 'NOT met'}")
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores, shared)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"settings": vars(args) | {"out": str(args.out)}, "stall": stall, "cpu_rounds": cpu, "calls": calls,
              "cpu_ratio": cpu_ratio, "checks": checks, "table_markdown": text,
              "loadavg": {"before": load_before, "after": load_after}, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (args.out / "open_model.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out / 'open_model.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
