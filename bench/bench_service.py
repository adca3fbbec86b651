"""Throughput of the reference product-service next to nginx serving the same JSON (a benchmark, not a test).

Starts `python -m product_service` and nginx (one worker) on free loopback ports, runs wrk against
GET /products, GET /health and POST /products/buy, prints requests/s side by side with the
service/nginx ratio, and writes the numbers to bench/out/bench-<timestamp>.json.

    .venv/bin/python bench/bench_service.py [--duration 10] [--rounds 1] [--connections 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadsuite.cli.ports import free_port  # noqa: E402 - after the path

TEMPLATE = ROOT / "bench" / "nginx" / "nginx.conf.template"
BUY_PRODUCT = "Cookbook: Global Cuisine"
BUY_STOCK = 10**15  # never runs out during a benchmark


@dataclass
class Result:
    target: str
    method: str
    path: str
    requests_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    non_2xx: int
    socket_errors: int


def fail(message: str) -> None:
    print(f"bench_service: error: {message}", file=sys.stderr)
    sys.exit(2)


def find_tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                      None)
    if path is None:
        fail(f"{name} not found; install it with: apt-get install -y nginx wrk")
    return path


def start_service(workdir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "product_service", "--port", "0", "--db",
                             str(workdir / "bench.db"), "--reset"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    banner = proc.stdout.readline().strip()
    if not banner.startswith("listening on "):
        proc.kill()
        fail(f"product_service did not start (got {banner!r})")
    return proc, banner.removeprefix("listening on ")


def start_nginx(nginx: str, workdir: Path, products_json: bytes) -> tuple[subprocess.Popen, str]:
    prefix = workdir / "nginx"
    for sub in ("www", "tmp"):
        (prefix / sub).mkdir(parents=True)
    (prefix / "www" / "products.json").write_bytes(products_json)
    for path in (workdir, prefix, prefix / "www", prefix / "www" / "products.json"):
        path.chmod(0o755)  # the worker may run as another user than the master
    port = free_port()
    conf = (TEMPLATE.read_text().replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port))
            .replace("@USER@", "user root;" if os.geteuid() == 0 else ""))
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                             str(prefix / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"nginx exited: {proc.stderr.read().strip()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    fail("nginx did not answer within 10 s")
    raise AssertionError  # unreachable


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _ms(text: str) -> float | None:
    """wrk's '812.00us', '6.89ms', '1.02s', '1.5m' in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        return None
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[match.group(2)]


def run_wrk(wrk: str, url: str, args: argparse.Namespace, script: Path | None, seconds: int) -> dict:
    cmd = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--latency", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        fail(f"could not read wrk output for {url}: {out.strip()[-300:]}")
    p50, p99 = re.search(r"50%\s+(\S+)", out), re.search(r"99%\s+(\S+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests_per_s": float(rps.group(1)), "latency_p50_ms": _ms(p50.group(1)) if p50 else None,
            "latency_p99_ms": _ms(p99.group(1)) if p99 else None,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0}


def measure(wrk: str, target: str, method: str, base: str, path: str, args: argparse.Namespace,
            script: Path | None = None) -> Result:
    if args.warmup > 0:
        run_wrk(wrk, base + path, args, script, args.warmup)
    numbers = run_wrk(wrk, base + path, args, script, args.duration)
    result = Result(target, method, path, **numbers)
    print(f"  {target:<8} {method:<5} {path:<15} {result.requests_per_s:>10.0f} req/s  "
          f"p50 {result.latency_p50_ms or 0:.2f} ms  p99 {result.latency_p99_ms or 0:.2f} ms"
          f"{'  non-2xx ' + str(result.non_2xx) if result.non_2xx else ''}", flush=True)
    return result


def median_result(runs: list[Result]) -> Result:
    """The run with the median throughput (a whole run, so its latencies belong to it)."""
    return sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every measurement, alternating targets, and report the median (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load first (default 1)")
    parser.add_argument("--connections", type=int, default=20, help="open connections (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1; the machine has 2 cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="folder for the JSON result")
    args = parser.parse_args()
    if args.duration <= 0 or args.rounds < 1 or args.connections < args.threads or args.threads < 1:
        fail("need --duration > 0, --rounds >= 1 and --connections >= --threads >= 1")
    nginx, wrk = find_tool("nginx"), find_tool("wrk")

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        workdir = Path(tmp)
        service, service_url = start_service(workdir)
        nginx_proc = None
        try:
            with urllib.request.urlopen(service_url + "/products", timeout=10) as resp:
                products_json = resp.read()
            patch = urllib.request.Request(service_url + "/products/stock", method="PATCH",
                                           data=json.dumps({"name": BUY_PRODUCT, "stock": BUY_STOCK}).encode(),
                                           headers={"Content-Type": "application/json"})
            urllib.request.urlopen(patch, timeout=10).close()
            nginx_proc, nginx_url = start_nginx(nginx, workdir, products_json)
            buy_script = workdir / "buy.lua"
            body = json.dumps({"name": BUY_PRODUCT, "quantity": 1})
            buy_script.write_text(f'wrk.method = "POST"\nwrk.body = [[{body}]]\n'
                                  'wrk.headers["Content-Type"] = "application/json"\n')
            print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s on {os.cpu_count()} cores; "
                  f"/products body {len(products_json)} bytes", flush=True)
            plan = [("service", "GET", service_url, "/products", None), ("nginx", "GET", nginx_url, "/products", None),
                    ("service", "GET", service_url, "/health", None), ("nginx", "GET", nginx_url, "/health", None),
                    ("service", "POST", service_url, "/products/buy", buy_script)]
            rounds: list[list[Result]] = []
            for number in range(1, args.rounds + 1):
                # Rounds alternate service and nginx, so a neighbour's load skews both sides alike.
                print(f"round {number}/{args.rounds}", flush=True)
                rounds.append([measure(wrk, target, method, base, path, args, script)
                               for target, method, base, path, script in plan])
            results = [median_result([r[i] for r in rounds]) for i in range(len(plan))]
        finally:
            if nginx_proc is not None:
                stop(nginx_proc)
            stop(service)

    rps = {(r.target, r.path): r.requests_per_s for r in results}
    ratios = {path: rps[("service", path)] / rps[("nginx", path)] for path in ("/products", "/health")}
    ratios["/products/buy vs nginx /products"] = rps[("service", "/products/buy")] / rps[("nginx", "/products")]
    print("\nmedian service / nginx:" if args.rounds > 1 else "\nservice / nginx:")
    for path, ratio in ratios.items():
        print(f"  {path:<34} {ratio:6.3f}  ({ratio * 100:.1f} %)")
    args.out.mkdir(parents=True, exist_ok=True)
    out_file = args.out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out_file.write_text(json.dumps({
        "settings": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
                     "threads": args.threads},
        "machine": {"cpus": os.cpu_count(), "loadavg_after": os.getloadavg(), "python": platform.python_version()},
        "results": [asdict(r) for r in results], "rounds": [[asdict(r) for r in run] for run in rounds], "ratios_service_over_nginx": ratios}, indent=2) + "\n")
    print(f"\nwrote {out_file.relative_to(ROOT) if out_file.is_relative_to(ROOT) else out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
