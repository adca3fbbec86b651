"""The default run (shipped config.yaml, no user class named) catches a service that loses concurrent buys, and
passes a correct one even when every product list comes back in a different order (as the real Go service's do).

The shuffling proxy in front of the correct service is this file run as a script (aiohttp, its own process):
`python tests/test_detection.py UPSTREAM_PORT PORT`; `GET /__shuffled` answers how many lists it reordered.
"""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECONDS = "20"  # the flash sale opens at 10 s (config.yaml flash_sale.start_seconds) and lasts a few seconds
STAGGER_SECONDS = 6  # the runs start this far apart, so that no two flash sales (a few seconds each) overlap


def _proxy_main(upstream_port: int, port: int) -> None:
    """Relay everything to the service; shuffle the data list of every successful GET /products... answer."""
    import aiohttp
    from aiohttp import web

    upstream = f"http://127.0.0.1:{upstream_port}"
    shuffled = 0
    dropped = {"host", "content-length", "transfer-encoding", "connection"}

    async def relay(request: web.Request) -> web.Response:
        nonlocal shuffled
        if request.path == "/__shuffled":
            return web.json_response({"shuffled": shuffled})
        session: aiohttp.ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
        async with session.request(request.method, upstream + request.path_qs, headers=headers,
                                   data=await request.read(), skip_auto_headers=("Content-Type",),
                                   allow_redirects=False) as answer:
            body = await answer.read()
            if request.method == "GET" and request.path.startswith("/products") and answer.status == 200:
                document = json.loads(body)
                if isinstance(document.get("data"), list) and len(document["data"]) > 1:
                    random.shuffle(document["data"])
                    body = json.dumps(document).encode()
                    shuffled += 1
            keep = {k: v for k, v in answer.headers.items() if k.lower() not in dropped | {"content-encoding"}}
            return web.Response(status=answer.status, body=body, headers=keep)

    async def session(app: web.Application):
        app["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", relay)
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print("listening", flush=True))


if __name__ == "__main__":
    _proxy_main(int(sys.argv[1]), int(sys.argv[2]))
    raise SystemExit(0)


from concurrent.futures import ThreadPoolExecutor  # noqa: E402  (the script above needs none of this)
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack  # noqa: E402

from suite_runs import SuiteRun, run_suite  # noqa: E402
from tests.conftest import free_port, start_service  # noqa: E402

pytestmark = pytest.mark.e2e


class ShufflingProxy:
    """`python tests/test_detection.py UPSTREAM PORT` as a context manager; stopped (bounded) on exit."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), str(upstream_port), str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> "ShufflingProxy":
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.shuffled()
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"the shuffling proxy did not start: {self.proc.stdout.read()[-2000:]}")

    def shuffled(self) -> int:
        with urllib.request.urlopen(self.url + "/__shuffled", timeout=2) as answer:
            return json.loads(answer.read())["shuffled"]

    def __exit__(self, *_exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory) -> Iterator[dict[str, tuple[SuiteRun, str, int]]]:
    """The three default runs at the same time, each against its own fresh service: {name: (run, url, lists
    shuffled)}; the services stay up until the module ends. Each run applies 20 s of light load (10 users), so side
    by side, STAGGER_SECONDS apart (each sale's rush on its own), they take about half the time of one after another."""
    root = tmp_path_factory.mktemp("detection")
    with ExitStack() as stack:
        services = {name: start_service(root, *flags) for name, flags in
                    (("unsafe", ("--unsafe-buy",)), ("correct", ()), ("go", ("--profile", "go")))}
        for handle in services.values():
            stack.callback(handle.stop)
        proxy = stack.enter_context(ShufflingProxy(services["correct"].port))
        urls = {"unsafe": services["unsafe"].url, "correct": proxy.url, "go": services["go"].url}

        def run(order: int, name: str) -> SuiteRun:
            time.sleep(order * STAGGER_SECONDS)
            return run_suite("headless", "10", SECONDS, urls[name], "--no-analysis", results_root=root / name,
                             timeout=120)

        with ThreadPoolExecutor(len(urls)) as pool:
            futures = {name: pool.submit(run, order, name) for order, name in enumerate(urls)}
            runs = {name: future.result() for name, future in futures.items()}
        shuffled = proxy.shuffled()
        yield {name: (runs[name], urls[name], shuffled if name == "correct" else 0) for name in urls}


def test_the_default_run_fails_the_oracle_against_a_service_that_loses_concurrent_buys(default_runs):
    run, url, _ = default_runs["unsafe"]
    assert run.returncode == 1, run.explain()
    summary = run.summary()
    consistency = summary["consistency"]
    assert consistency["passed"] is False
    counts = consistency["violation_counts"]
    assert counts.get("lost_update", 0) + counts.get("oversell", 0) >= 1, counts
    # Only the oracle fails: the rush itself is ordinary shop traffic for every threshold.
    assert [r for r in summary["verdict"]["reasons"] if not r.startswith("FAIL: consistency")] == [], summary["verdict"]
    sale = {row["name"]: row for row in summary["endpoints"]}
    assert sale["Flash_Sale_Restock"]["requests"] >= 1 and sale["Flash_Sale_Buy"]["requests"] >= 100
    assert sale["Buy_Product"]["requests"] > 0 and sale["Get_All_Products"]["requests"] > 0  # the mix went on
    flagged = {v["product"] for v in consistency["violations"] if v["kind"] in ("lost_update", "oversell")}
    assert min(_catalogue(url)) in flagged  # the best-seller the sale was on


def test_the_default_run_passes_a_correct_service_whose_lists_come_in_random_order(default_runs):
    run, _, shuffled = default_runs["correct"]
    assert run.returncode == 0, run.explain()
    summary = run.summary()
    assert summary["totals"]["failures"] == 0, run.failures()
    assert summary["consistency"]["passed"] is True and summary["consistency"]["violations_total"] == 0
    listings = sum(row["requests"] for row in summary["endpoints"]
                   if row["name"] == "Get_All_Products" or row["name"].startswith("Get_Products_By_Category_"))
    assert shuffled >= listings // 2 > 0  # most lists really arrived reordered (one-product lists cannot be)
    assert {row["name"]: row for row in summary["endpoints"]}["Flash_Sale_Buy"]["requests"] >= 100


def _catalogue(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/products", timeout=5) as answer:
        return {p["name"]: p["stock"] for p in json.loads(answer.read())["data"]}


# The real service's observed behaviour (python -m product_service --profile go): the default run reports
# exactly its defects, each with its reason, and nothing else.
REAL_DEFECTS = (
    re.compile(r"status: expected \d{3}, saw 500 DATABASE_ERROR"),  # torn reads, on any endpoint
    re.compile(r"status: expected 404, saw 500 UNKNOWN_ERROR"),  # Fiber's 404 mapped to 500 (Invalid_Path only)
)
ORACLE_DEFECTS = {"lost_update", "oversell", "conservation"}


def test_the_default_run_against_the_real_service_profile_names_only_its_real_defects(default_runs):
    run, _, _ = default_runs["go"]
    assert run.returncode == 1, run.explain()
    for row in run.failures():
        reason = row["Error"]
        assert any(pattern.search(reason) for pattern in REAL_DEFECTS), f"not a defect of the real service: {row}"
        if "UNKNOWN_ERROR" in reason:
            assert row["Name"] == "Invalid_Path", row
    summary = run.summary()
    unknown_path = {row["name"]: row for row in summary["endpoints"]}.get("Invalid_Path")
    if unknown_path is not None:  # a rare task (weight 1 of 42): when it ran, each answer was the 500 defect
        assert unknown_path["failures"] == unknown_path["requests"], unknown_path
    consistency = summary["consistency"]
    kinds = set(consistency.get("violation_counts") or {})
    assert consistency["passed"] is False and kinds & {"lost_update", "oversell"}, consistency  # the sale catches it
    assert kinds <= ORACLE_DEFECTS, consistency  # and the oracle names nothing the real service does not do
