"""Load-generator benchmark: wrk, hey, bare Locust and the full suite side by side, in requests per CPU-second.

One command, one after another with the same duration and concurrency, generator pinned to the first
core and the target to the last: wrk (the ceiling), hey (GET /products only: hey sends one request),
bare Locust HttpUser and FastHttpUser scripts sending the suite's request mix, and the full suite
(locustfile.py: all tasks, validators, cache, hooks, oracle) with each client. The target is a
canned-response nginx (default) or the reference service. Then a latency-accuracy check against the
reference service with --latency-ms 50:50 (bare Locust's median versus the suite's).
Writes bench/out/bench.json and prints a Markdown table.

    .venv/bin/python bench/run.py [--duration 15] [--connections 20] [--target nginx|service] [--rounds 1]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py; also puts the project root on sys.path)

ROOT = common.ROOT
LOCUSTFILES = ROOT / "bench" / "locustfiles"
GENERATORS = ("wrk", "hey", "bare_requests", "bare_fast", "suite_requests", "suite_fast")


# Running one generator --------------------------------------------------------------------------------

def run_measured(cmd: list[str], env: dict[str, str] | None, timeout: float, log: Path,
                 cwd: Path = ROOT) -> tuple[int, float, str]:
    """Run cmd to completion; (exit code, CPU seconds of it and its waited-for children from wait4, stdout)."""
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        out_chunks: list[str] = []
        reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=10)
    return proc.returncode, usage.ru_utime + usage.ru_stime, "".join(out_chunks)


def _ms(text: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4}[match[2]] if match else None


def run_wrk(url: str, script: Path, args, work: Path, core) -> dict[str, Any]:
    cmd = common.pinned(core, [common.find_tool("wrk"), "-t1", f"-c{args.connections}", f"-d{args.duration}s",
                               "--latency", "-s", str(script), url])
    code, cpu, out = run_measured(cmd, None, args.duration + 60, work / "wrk.log")
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if code != 0 or total is None or rps is None:
        common.fail(f"wrk failed (exit {code}): {out[-300:]}")
    p50, p99 = re.search(r"50%\s+(\S+)", out), re.search(r"99%\s+(\S+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"requests": int(total[1]), "rps": float(rps[1]), "cpu_s": cpu, "cpu_total_s": cpu,
            "p50_ms": _ms(p50[1]) if p50 else None, "p99_ms": _ms(p99[1]) if p99 else None,
            "failures": int(non_2xx[1]) if non_2xx else 0, "note": "mix via Lua; failures = non-2xx (4xx paths)"}


def run_hey(url: str, args, work: Path, core) -> dict[str, Any]:
    cmd = common.pinned(core, [common.find_tool("hey"), "-z", f"{args.duration}s", "-c", str(args.connections),
                               url + "/products"])
    code, cpu, out = run_measured(cmd, None, args.duration + 60, work / "hey.log")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if code != 0 or rps is None:
        common.fail(f"hey failed (exit {code}): {out[-300:]}")
    statuses = {int(s): int(n) for s, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    p50, p99 = re.search(r"50% in ([\d.]+) secs", out), re.search(r"99% in ([\d.]+) secs", out)
    return {"requests": sum(statuses.values()), "rps": float(rps[1]), "cpu_s": cpu, "cpu_total_s": cpu,
            "p50_ms": float(p50[1]) * 1000 if p50 else None, "p99_ms": float(p99[1]) * 1000 if p99 else None,
            "failures": sum(n for s, n in statuses.items() if s >= 400), "note": "GET /products only"}


def locust_command(locustfile: str, url: str, users: int, seconds: int, csv_prefix: Path, core) -> list[str]:
    return common.pinned(core, [
        sys.executable, "-m", "locust", "-f", f"{locustfile},{LOCUSTFILES / 'cpu_window.py'}", "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url, "--csv", str(csv_prefix),
        "--only-summary", *(["--results-dir", str(csv_prefix.parent)] if locustfile == "locustfile.py" else [])])


def read_aggregated(stats_csv: Path) -> dict[str, Any]:
    with open(stats_csv, newline="", encoding="utf-8") as file:
        rows = {row["Name"]: row for row in csv.DictReader(file)}
    total = rows["Aggregated"]
    number = lambda key: float(total[key]) if total.get(key) not in (None, "", "N/A") else None  # noqa: E731
    return {"requests": int(total["Request Count"]), "failures": int(total["Failure Count"]),
            "rps": number("Requests/s"), "p50_ms": number("50%"), "p99_ms": number("99%"),
            "avg_ms": number("Average Response Time"), "names": sorted(n for n in rows if n != "Aggregated")}


def run_locust(kind: str, url: str, users: int, seconds: int, work: Path, env_extra: dict[str, str], core,
               tag: str = "", suite_root: Path = ROOT) -> dict[str, Any]:
    """One headless Locust run; requests per CPU-second over the steady window (cpu_window.py)."""
    folder = work / f"{kind}{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    locustfile = {"bare_fast": str(LOCUSTFILES / "bare_fast.py"), "bare_requests": str(LOCUSTFILES / "bare_requests.py"),
                  "suite_fast": "locustfile.py", "suite_requests": "locustfile.py"}[kind]
    window_out = folder / "window.json"
    root = suite_root if kind.startswith("suite") else ROOT
    env = {**os.environ, **env_extra, "BENCH_WINDOW_OUT": str(window_out), "NO_PROXY": "127.0.0.1",
           "PYTHONPATH": str(root)}
    if kind.startswith("suite"):
        env["SERVICE_CLIENT"] = kind.removeprefix("suite_")
    cmd = locust_command(locustfile, url, users, seconds, folder / "stats", core)
    code, cpu_total, _ = run_measured(cmd, env, seconds + 120, folder / "locust.log", cwd=root)
    if code not in (0, 1) or not window_out.exists():
        common.fail(f"{kind} exited {code}: see {folder / 'locust.log'}: "
                    f"{(folder / 'locust.log').read_text(errors='replace')[-600:]}")
    marks = json.loads(window_out.read_text())
    start, stop = marks["start"], marks["stop"]
    result = read_aggregated(folder / "stats_stats.csv")
    window_requests = stop["requests"] - start["requests"]
    result.update({"cpu_s": stop["cpu_s"] - start["cpu_s"], "cpu_total_s": cpu_total, "exit_code": code,
                   "window_s": stop["wall_s"] - start["wall_s"], "window_requests": window_requests,
                   "window_failures": stop["failures"] - start["failures"]})
    summary = folder / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        result["validation_failures"] = data.get("custom_stats", {}).get("validation_failures")
        result["consistency_passed"] = (data.get("consistency") or {}).get("passed")
    return result


def per_cpu_second(result: dict[str, Any]) -> float:
    requests = result.get("window_requests", result["requests"])
    return requests / result["cpu_s"] if result["cpu_s"] > 0 else 0.0


# Configuration of the suite for the bench ----------------------------------------------------------------

def bench_config(work: Path, target: str, target_rps: float | None = None, wait_s: float = 0.0) -> tuple[Path, Any]:
    """A CONFIG_PATH for the suite: wait_s think time (default none), no thresholds, no monitoring (and
    canned-friendly data); target_rps paces it with the open model instead."""
    import yaml

    from config_loader import load_config, parse_config

    data = load_config(env={}).model_dump()
    data["wait_time"] = {"min_seconds": wait_s, "max_seconds": wait_s}
    thresholds = data["thresholds"]
    for key in ("error_rate", "p95_ms", "p99_ms", "avg_ms", "min_rps"):
        thresholds[key] = None
    thresholds["per_request"] = {}
    thresholds["consistency"] = False
    data["monitoring"]["influxdb"]["enabled"] = False
    data["load_shape"]["name"] = None
    data["load_shape"]["target_rps"] = target_rps
    if target == "nginx":  # one buy quantity, one stock value: each body's length names its product
        data["test_data"]["max_buy_quantity"] = 1
        data["test_data"]["stock_update_min"] = data["test_data"]["stock_update_max"] = common.BENCH_STOCK_UPDATE
    config = parse_config(data, "bench config")
    path = work / f"bench-config-{target}{'-paced' if target_rps else ''}{f'-wait{wait_s:g}' if wait_s else ''}.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
    return path, config


def write_mix(work: Path, products: list[dict], config) -> tuple[Path, Path]:
    mix = common.request_mix(products, config)
    mix_path = work / "mix.json"
    mix_path.write_text(json.dumps(common.expand_mix(mix)))
    lua = work / "mix.lua"
    lua.write_text(common.wrk_script(mix))
    return mix_path, lua


# Report ------------------------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown_table(results: dict[str, dict[str, Any]], ratios: dict[str, float | None]) -> str:
    lines = ["| generator | requests | req/s | CPU s | req per CPU-s | p50 ms | p99 ms | failures |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in GENERATORS:
        r = results.get(name)
        if r is None:
            continue
        lines.append(f"| {name} | {r['requests']:,} | {_fmt(r['rps'])} | {_fmt(r['cpu_s'], 2)} | "
                     f"{_fmt(r['per_cpu_s'])} | {_fmt(r['p50_ms'], 1)} | {_fmt(r['p99_ms'], 1)} | {r['failures']:,} |")
    lines.append("")
    for label, value in ratios.items():
        lines.append(f"- {label}: {'-' if value is None else f'{value:.3f}'}")
    return "\n".join(lines)


def median_result(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median requests per CPU-second (all its numbers belong together)."""
    ordered = sorted(rounds, key=lambda r: r["per_cpu_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_per_cpu_s"] = [round(r["per_cpu_s"]) for r in rounds]
    return chosen


def run_paired(args, url: str, work: Path, env: dict[str, str], core) -> list[float]:
    """bare_fast and suite_fast started together on one core, --paired-rounds times; their per-round ratios."""
    from concurrent.futures import ThreadPoolExecutor

    ratios = []
    for round_no in range(args.paired_rounds):
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {kind: pool.submit(run_locust, kind, url, args.connections, args.duration, work, env, core,
                                         f"-paired{round_no}", args.suite_root.resolve())
                       for kind in ("bare_fast", "suite_fast")}
            bare, suite = (futures[k].result() for k in ("bare_fast", "suite_fast"))
        ratios.append(round(per_cpu_second(suite) / per_cpu_second(bare), 4))
        print(f"  paired round {round_no + 1}: bare_fast {per_cpu_second(bare):,.0f}, suite_fast "
              f"{per_cpu_second(suite):,.0f} req per CPU-s: ratio {ratios[-1]:.3f}", flush=True)
    return ratios


def latency_check(work: Path, args, gen_core, target_core, service_config: Path) -> dict[str, Any]:
    """Bare Locust and the suite against the reference service with --latency-ms 50:50: reported medians."""
    service, url = common.start_service(work, "--latency-ms", "50:50", core=target_core)
    try:
        products = common.get_json(url + "/products")["data"]
        from config_loader import load_config
        config = load_config(service_config, env={})
        (work / "latency").mkdir(exist_ok=True)
        mix_path, _ = write_mix(work / "latency", products, config)
        out: dict[str, Any] = {"latency_ms": "50:50", "users": args.latency_users, "duration_s": args.latency_duration,
                               "wait_s": args.latency_wait}
        env = {"CONFIG_PATH": str(service_config), "BENCH_MIX": str(mix_path), "BENCH_WAIT_S": str(args.latency_wait)}
        for client in ("fast", "requests"):
            bare = run_locust(f"bare_{client}", url, args.latency_users, args.latency_duration, work, env, gen_core,
                              tag="-latency")
            suite = run_locust(f"suite_{client}", url, args.latency_users, args.latency_duration, work, env, gen_core,
                               tag="-latency")
            out[client] = {"bare_p50_ms": bare["p50_ms"], "suite_p50_ms": suite["p50_ms"],
                           "bare_avg_ms": bare["avg_ms"], "suite_avg_ms": suite["avg_ms"],
                           "p50_difference_ms": (suite["p50_ms"] or 0) - (bare["p50_ms"] or 0),
                           "avg_difference_ms": round((suite["avg_ms"] or 0) - (bare["avg_ms"] or 0), 2)}
            out[client]["within_2ms"] = abs(out[client]["p50_difference_ms"]) <= 2
        return out
    finally:
        common.stop(service)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per generator (default 15)")
    parser.add_argument("--connections", type=int, default=20, help="connections / Locust users (default 20)")
    parser.add_argument("--target", choices=("nginx", "service"), default="nginx",
                        help="canned-response nginx (default) or the reference service")
    parser.add_argument("--rounds", type=int, default=3,
                        help="repeat the Locust runs interleaved; report the median round and the median of "
                             "the per-round ratios (default 3)")
    parser.add_argument("--paired-rounds", type=int, default=3,
                        help="rounds of bare_fast and suite_fast run at the same time on the same core: both see "
                             "the same machine, so their ratio is far less noisy on a shared machine (default 3; 0 skips)")
    parser.add_argument("--suite-root", type=Path, default=ROOT,
                        help="checkout whose locustfile.py the suite runs use (before/after comparisons)")
    parser.add_argument("--only", default=",".join(GENERATORS), help="comma-separated generators to run")
    parser.add_argument("--latency-users", type=int, default=10, help="users of the latency check (default 10)")
    parser.add_argument("--latency-duration", type=int, default=10, help="seconds per latency-check run (default 10)")
    parser.add_argument("--latency-wait", type=float, default=0.1,
                        help="wait between a user's requests in the latency check, for both (default 0.1 s: "
                             "neither generator nor service is saturated, so only measurement differs)")
    parser.add_argument("--skip-latency", action="store_true", help="skip the latency-accuracy check")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="folder for bench.json")
    args = parser.parse_args()
    if args.duration < 5 or args.connections < 1 or args.rounds < 1:
        common.fail("need --duration >= 5, --connections >= 1 and --rounds >= 1")
    only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(only) - set(GENERATORS))
    if unknown:
        common.fail(f"unknown generator(s) {', '.join(unknown)}: choose from {', '.join(GENERATORS)}")
    for tool in {"wrk", "hey"} & set(only) | ({"nginx"} if args.target == "nginx" else set()):
        common.find_tool(tool)
    gen_core, target_core = common.cores()

    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        config_path, config = bench_config(work, args.target)
        target_proc, url, products, collisions = common.start_target(work, args.target, config, target_core)
        mix_path, lua = write_mix(work, products, config)
        env = {"CONFIG_PATH": str(config_path), "BENCH_MIX": str(mix_path)}
        print(f"bench: {args.target} at {url}, generator on core {gen_core}, target on core {target_core}, "
              f"{args.duration} s x {args.connections} connections each", flush=True)
        if collisions:
            labels = sorted({c.split(": ", 1)[1].split(" (")[0] for c in collisions})
            print(f"bench: canned nginx cannot tell apart {len(collisions)} request bodies ({', '.join(labels)}): "
                  "their validators fail, as expected", flush=True)
        results: dict[str, dict[str, Any]] = {}
        rounds: dict[str, list[dict]] = {}
        paired: list[float] = []
        try:
            if "wrk" in only:
                results["wrk"] = run_wrk(url, lua, args, work, gen_core)
                print(f"  wrk done: {results['wrk']['rps']:,.0f} req/s", flush=True)
            if "hey" in only:
                results["hey"] = run_hey(url, args, work, gen_core)
                print(f"  hey done: {results['hey']['rps']:,.0f} req/s", flush=True)
            for round_no in range(args.rounds):
                for kind in ("bare_requests", "bare_fast", "suite_requests", "suite_fast"):
                    if kind not in only:
                        continue
                    result = run_locust(kind, url, args.connections, args.duration, work, env, gen_core,
                                        tag=f"-{round_no}", suite_root=args.suite_root.resolve())
                    result["per_cpu_s"] = per_cpu_second(result)
                    rounds.setdefault(kind, []).append(result)
                    print(f"  {kind} round {round_no + 1}: {result['per_cpu_s']:,.0f} req per CPU-s "
                          f"({result['rps']:,.0f} req/s)", flush=True)
            results.update({kind: median_result(r) for kind, r in rounds.items()})
            if {"bare_fast", "suite_fast"} <= set(only):
                paired = run_paired(args, url, work, env, gen_core)
        finally:
            common.stop(target_proc)
        for name in ("wrk", "hey"):
            if name in results:
                results[name]["per_cpu_s"] = per_cpu_second(results[name])

        def ratio(a: str, b: str) -> float | None:
            """Median over rounds of the same round's ratio (cancels most drift of a shared machine)."""
            if a not in results or b not in results:
                return None
            if a in rounds and b in rounds:
                return statistics.median(x["per_cpu_s"] / y["per_cpu_s"] for x, y in zip(rounds[a], rounds[b]))
            return results[a]["per_cpu_s"] / results[b]["per_cpu_s"]

        ratios = {"suite_fast / bare_fast (target >= 0.85)": ratio("suite_fast", "bare_fast"),
                  "suite_fast / bare_fast, paired (same core, same time; median of rounds)":
                      statistics.median(paired) if paired else None,
                  "suite_requests / bare_requests": ratio("suite_requests", "bare_requests"),
                  "suite_fast / wrk": ratio("suite_fast", "wrk"),
                  "suite_fast / suite_requests": ratio("suite_fast", "suite_requests")}
        latency = None
        if not args.skip_latency:
            service_config, _ = bench_config(work, "service", wait_s=args.latency_wait)
            latency = latency_check(work, args, gen_core, target_core, service_config)

    table = markdown_table(results, ratios)
    print("\n" + table)
    if latency:
        print(f"\nLatency accuracy (reference service --latency-ms 50:50, {args.latency_users} users waiting "
              f"{args.latency_wait:g} s, {args.latency_duration} s each): reported median, bare Locust vs suite")
        for client in ("fast", "requests"):
            row = latency[client]
            print(f"- {client}: bare {row['bare_p50_ms']:.0f} ms, suite {row['suite_p50_ms']:.0f} ms "
                  f"(difference {row['p50_difference_ms']:+.0f} ms; averages {row['bare_avg_ms']:.1f} vs "
                  f"{row['suite_avg_ms']:.1f} ms): {'within' if row['within_2ms'] else 'NOT within'} 2 ms")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {"duration_s": args.duration, "connections": args.connections, "target": args.target,
                     "rounds": args.rounds, "generator_core": gen_core, "target_core": target_core},
        "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "python": platform.python_version(),
                    "loadavg_after": os.getloadavg(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "canned_collisions": len(collisions),
        "results": results, "ratios": ratios, "paired_ratios": paired, "latency_accuracy": latency, "table_markdown": table,
    }
    out_file = args.out / "bench.json"
    out_file.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {out_file}")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
