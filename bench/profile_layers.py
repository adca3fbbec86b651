"""Where the generator's CPU goes per request, by layer: cProfile over the steady window of bare and suite runs.

Starts the reference service (or `--target nginx`, the canned nginx; bench/common.py), runs bare FastHttpUser and the full suite (locustfile.py, fast
client) one after the other with the bench's request mix, no think time, profiled by cProfile from spawning
complete to test stopping (bench/locustfiles/cpu_window.py, BENCH_PROFILE_OUT), and prints microseconds of
profiled time per request by layer (each function's own time; a built-in's time goes to its callers' layers in
proportion). cProfile slows every Python call, so the absolute figures are inflated (about 2x); the split
between layers and the before/after of one layer are what it is for.

    .venv/bin/python bench/profile_layers.py [--duration 15] [--connections 20] [--suite-root DIR] [--only suite_fast]
"""
from __future__ import annotations

import argparse
import json
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from run import bench_config, run_locust, write_mix  # noqa: E402

ROOT = common.ROOT
LAYERS = ("Locust request machinery", "catch_response block", "Locust stats", "HTTP client (geventhttpclient)",
          "body reading/bounding", "JSON decoding", "validators", "cache", "ledger", "custom stats", "executor",
          "tasks (locustfile)", "event loop (gevent)", "other")
_CATCH = {"__enter__", "__exit__", "success", "failure", "_report_request"}


def layer_of(func: tuple[str, int, str]) -> str | None:
    """The layer of a pstats key (file, line, name); None for a built-in (charged to its callers)."""
    path, _line, name = func
    if path == "~":
        if "orjson" in name or "json" in name and "decode" in name:
            return "JSON decoding"
        return None
    if path.endswith("contrib/fasthttp.py"):
        return "catch_response block" if name in _CATCH else "Locust request machinery"
    if "/locust/" in path:
        return "Locust stats" if path.endswith("stats.py") else "Locust request machinery"
    if "geventhttpclient" in path:
        return "HTTP client (geventhttpclient)"
    if path.endswith("transport/bodies.py") or path.endswith("transport/headers.py"):
        return "body reading/bounding"
    if "/json/" in path:
        return "JSON decoding"
    if path.endswith("validators.py") or "/contract/" in path:
        return "validators"
    if path.endswith("shared_data.py"):
        return "cache"
    if "/oracle/" in path:
        return "ledger"
    if path.endswith("custom_stats.py"):
        return "custom stats"
    if "/openmodel/" in path:
        return "executor"
    if path.endswith("locustfile.py") or "/scenarios/" in path or "locustfiles/bare" in path:
        return "tasks (locustfile)"
    if "/gevent/" in path or "greenlet" in path:
        return "event loop (gevent)"
    return "other"


def by_layer(profile: Path) -> dict[str, float]:
    """Seconds of own time per layer; built-ins split among their callers' layers by the time spent in each."""
    stats = pstats.Stats(str(profile)).stats  # {func: (cc, nc, tt, ct, callers)}
    out = dict.fromkeys(LAYERS, 0.0)
    for func, (_cc, _nc, tt, _ct, callers) in stats.items():
        layer = layer_of(func)
        if layer is not None:
            out[layer] += tt
            continue
        shares = {caller: entry[2] for caller, entry in callers.items()}
        total = sum(shares.values())
        for caller, share in shares.items():
            out[layer_of(caller) or "other"] += tt * (share / total if total else 1 / len(shares))
        if not shares:
            out["other"] += tt
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--suite-root", type=Path, default=ROOT, help="checkout whose locustfile.py the suite runs")
    parser.add_argument("--only", default="bare_fast,suite_fast")
    parser.add_argument("--target", choices=("nginx", "service"), default="service",
                        help="the reference service (default) or the canned nginx (needs nginx)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.duration < 5 or not set(kinds) <= {"bare_fast", "suite_fast"}:
        common.fail("need --duration >= 5 and --only from bare_fast,suite_fast")
    if args.target == "nginx":
        common.find_tool("nginx")
    gen_core, target_core = common.cores()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        config_path, config = bench_config(work, args.target)
        target, url, products, _ = common.start_target(work, args.target, config, target_core)
        mix_path, _ = write_mix(work, products, config)
        try:
            for kind in kinds:
                profile = work / f"{kind}.prof"
                env = {"CONFIG_PATH": str(config_path), "BENCH_MIX": str(mix_path), "BENCH_PROFILE_OUT": str(profile)}
                run = run_locust(kind, url, args.connections, args.duration, work, env, gen_core, "-prof",
                                 args.suite_root.resolve())
                layers = by_layer(profile)
                requests = run["window_requests"]
                results[kind] = {"requests": requests, "failures": run["failures"],
                                 "us_per_request": {k: round(v * 1e6 / requests, 1) for k, v in layers.items()}}
                print(f"  {kind}: {requests:,} requests profiled", flush=True)
        finally:
            common.stop(target)
    lines = ["| layer | " + " | ".join(f"{k} us/req" for k in kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for layer in LAYERS:
        lines.append(f"| {layer} | " + " | ".join(f"{results[k]['us_per_request'][layer]:.1f}" for k in kinds) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(results[k]['us_per_request'].values()):.1f}**"
                                                for k in kinds) + " |")
    print("\n" + "\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_layers.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
