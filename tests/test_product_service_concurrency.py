"""Concurrent buys: the safe service never loses an update or oversells; --unsafe-buy reproduces the Go defect."""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
import pytest
from conftest import ROOT

CATALOG = json.loads((ROOT / "product_service" / "catalog.json").read_text(encoding="utf-8"))
PRODUCT = "Children's Picture Book: The Sleepy Owl"
STOCK, BUYERS = 50, 80


async def _stock_burst(url: str, name: str, stock: int, buyers: int) -> tuple[list[tuple[int, dict]], int]:
    """Set the stock, fire `buyers` buys of quantity 1 at once, and read the final stock."""
    connector = aiohttp.TCPConnector(limit=buyers + 5, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.patch(f"{url}/products/stock", json={"name": name, "stock": stock}) as resp:
            assert resp.status == 200, await resp.text()
        go = asyncio.Event()

        async def buy() -> tuple[int, dict]:
            await go.wait()
            async with session.post(f"{url}/products/buy", json={"name": name, "quantity": 1}) as resp:
                return resp.status, await resp.json(content_type=None)

        tasks = [asyncio.create_task(buy()) for _ in range(buyers)]
        await asyncio.sleep(0)
        go.set()
        results = await asyncio.gather(*tasks)
        async with session.post(f"{url}/products/details", json={"name": name}) as resp:
            final = (await resp.json())["data"]["stock"]
    return results, final


def burst(url: str, name: str = PRODUCT, stock: int = STOCK, buyers: int = BUYERS):
    return asyncio.run(_stock_burst(url, name, stock, buyers))


@pytest.mark.e2e
def test_80_simultaneous_buys_from_stock_50_sell_exactly_50(product_service):
    results, final = burst(product_service.url)
    successes = [body["data"]["remainingStock"] for status, body in results if status == 200]
    refusals = [body for status, body in results if status != 200]
    assert len(successes) == STOCK and len(refusals) == BUYERS - STOCK
    assert all(body["error"]["code"] == "INSUFFICIENT_STOCK" for body in refusals)
    assert all(body["error"]["message"].startswith(f"Insufficient stock for product '{PRODUCT}'. Available: 0")
               for body in refusals)
    assert final == 0
    assert sorted(successes) == list(range(STOCK))  # 50 distinct remainingStock values: no update was lost


@pytest.mark.e2e
def test_unsafe_buy_loses_updates_under_contention(service_factory):
    service = service_factory("--unsafe-buy")
    evidence = []
    for _ in range(10):  # bounded: the interleaving is random, but almost every burst shows it
        results, final = burst(service.url)
        remaining = [body["data"]["remainingStock"] for status, body in results if status == 200]
        assert all(status in (200, 400) for status, _ in results)
        sold_per_stock_drop = len(remaining) - (STOCK - final)
        duplicates = [value for value, count in Counter(remaining).items() if count > 1]
        evidence.append((len(remaining), final, len(duplicates)))
        if sold_per_stock_drop > 0 or duplicates:
            break
    else:
        pytest.fail(f"no lost update in 10 bursts (successes, final stock, duplicate values): {evidence}")
    assert sold_per_stock_drop > 0 or duplicates


@pytest.mark.e2e
def test_mixed_buys_and_reads_keep_every_product_consistent(product_service):
    names = [p["name"] for p in CATALOG[:3]]

    async def scenario() -> tuple[Counter, dict[str, int], list[int]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for name in names:
                async with session.patch(f"{product_service.url}/products/stock", json={"name": name, "stock": 30}):
                    pass

            async def buy(name: str) -> tuple[str, int]:
                async with session.post(f"{product_service.url}/products/buy", json={"name": name, "quantity": 2}) as r:
                    return name, r.status

            async def read() -> tuple[str, int]:
                async with session.get(f"{product_service.url}/products") as r:
                    await r.read()
                    return "", r.status

            jobs = [buy(names[i % 3]) for i in range(60)] + [read() for _ in range(30)]
            outcome = await asyncio.gather(*jobs)
            sold = Counter(name for name, status in outcome if name and status == 200)
            async with session.get(f"{product_service.url}/products") as r:
                stocks = {p["name"]: p["stock"] for p in (await r.json())["data"]}
            return sold, stocks, [status for _, status in outcome]

    sold, stocks, statuses = asyncio.run(scenario())
    assert set(statuses) <= {200, 400}
    for name in names:
        assert stocks[name] == 30 - 2 * sold[name] and stocks[name] >= 0
        assert sold[name] == 15  # 20 buys of 2 each from 30: exactly 15 succeed
