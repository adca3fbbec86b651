"""Measure a running service's race defects: N concurrent buyers of one product, one sequential bystander.

`python -m product_service.race_probe --url http://127.0.0.1:8082 [--buyers 30] [--seconds 6]`
prints one JSON object: buys answered 200/400/500, the share answered 500 (torn reads), the
contended product's lost updates (successful buys minus stock drop) and the bystander's lost units
(a product bought by one sequential client while the others write). A contract-exact service shows
zero for all three defects.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import aiohttp

CONTENDED = "Children's Picture Book: The Sleepy Owl"
BYSTANDER = "Cookbook: Global Cuisine"
START_STOCK = 1_000_000  # never runs out, so every buy that reads a whole file can succeed
SETTLE_S = 0.2  # lets any write window (and torn-file window) close before the final reads


@dataclass(frozen=True, slots=True)
class RaceReport:
    buys: int
    ok: int
    refused: int  # 4xx
    failed: int  # 5xx
    failed_share: float
    lost: int  # successful buys the contended stock never saw
    lost_share: float
    bystander_ok: int
    bystander_lost: int
    seconds: float


async def _call(session: aiohttp.ClientSession, method: str, url: str, payload: dict) -> tuple[int, dict | None]:
    async with session.request(method, url, json=payload) as resp:
        body = await resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, None


async def _settled_stock(session: aiohttp.ClientSession, base: str, name: str) -> int:
    """The product's stock once writes have stopped; retries a read that a torn file fails."""
    for _ in range(50):
        status, body = await _call(session, "POST", f"{base}/products/details", {"name": name})
        if status == 200 and body is not None:
            return int(body["data"]["stock"])
        await asyncio.sleep(0.02)
    raise RuntimeError(f"could not read the stock of {name!r} after the run")


async def _set_stock(session: aiohttp.ClientSession, base: str, name: str, stock: int) -> None:
    for _ in range(50):
        status, _ = await _call(session, "PATCH", f"{base}/products/stock", {"name": name, "stock": stock})
        if status == 200 and await _settled_stock(session, base, name) == stock:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"could not set the stock of {name!r}")


async def probe(base: str, buyers: int = 30, seconds: float = 6.0, *, contended: str = CONTENDED,
                bystander: str | None = BYSTANDER, bystander_pause: float = 0.05) -> RaceReport:
    """Run the contention for `seconds` and count what the service lost."""
    connector = aiohttp.TCPConnector(limit=buyers + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for name in (contended, bystander):
            if name is not None:
                await _set_stock(session, base, name, START_STOCK)
                await asyncio.sleep(SETTLE_S)
        statuses: Counter[int] = Counter()
        bystander_ok = 0
        deadline = time.monotonic() + seconds

        async def buyer() -> None:
            while time.monotonic() < deadline:
                status, _ = await _call(session, "POST", f"{base}/products/buy", {"name": contended, "quantity": 1})
                statuses[status] += 1

        async def sequential_bystander() -> None:
            nonlocal bystander_ok
            while time.monotonic() < deadline:
                status, _ = await _call(session, "POST", f"{base}/products/buy", {"name": bystander, "quantity": 1})
                bystander_ok += status == 200
                await asyncio.sleep(bystander_pause)

        started = time.monotonic()
        jobs = [buyer() for _ in range(buyers)] + ([sequential_bystander()] if bystander else [])
        await asyncio.gather(*jobs)
        elapsed = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)
        drop = START_STOCK - await _settled_stock(session, base, contended)
        bystander_drop = START_STOCK - await _settled_stock(session, base, bystander) if bystander else 0
    buys = sum(statuses.values())
    ok = statuses[200]
    failed = sum(n for status, n in statuses.items() if status >= 500)
    refused = sum(n for status, n in statuses.items() if 400 <= status < 500)
    lost = ok - drop
    return RaceReport(buys=buys, ok=ok, refused=refused, failed=failed, failed_share=round(failed / max(buys, 1), 4),
                      lost=lost, lost_share=round(lost / max(ok, 1), 4), bystander_ok=bystander_ok,
                      bystander_lost=bystander_ok - bystander_drop, seconds=round(elapsed, 2))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m product_service.race_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the running service, e.g. http://127.0.0.1:8082")
    parser.add_argument("--buyers", type=int, default=30, help="concurrent buyers of one product (default 30)")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long they buy (default 6)")
    args = parser.parse_args(argv)
    report = asyncio.run(probe(args.url.rstrip("/"), args.buyers, args.seconds))
    print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
