"""The contention scenario: many users buy one product with no wait; the oracle must tell a correct
service (exit 0, exactly the stock sold) from one that loses updates (exit 1, lost_update with evidence),
in one process and with a master and two workers."""
from __future__ import annotations

import json
import re
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from suite_runs import run_suite, write_config

pytestmark = pytest.mark.e2e

STOCK = 200  # the unsafe service loses about 7% of concurrent buys: about 14 here, never none
USERS = "20"
WORKER_ID = re.compile(r"^.+_[0-9a-f]{32}$")  # Locust's worker client id: <hostname>_<uuid hex>


def catalogue(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/products", timeout=5) as response:
        return {p["name"]: p["stock"] for p in json.loads(response.read())["data"]}


def contention_config(tmp_path, url: str):
    """Contend for a named product (the last one of the catalogue, so not the default pick) set to STOCK."""
    product = sorted(catalogue(url))[-1]
    return product, write_config(tmp_path, {"contention": {"product": product, "stock": STOCK, "quantity": 1}})


def contend(tmp_path, url: str, mode: str, selector: tuple[str, ...], name: str, seconds: str = "5"):
    product, config = contention_config(tmp_path, url)
    shape = ("distributed", "2", USERS, seconds) if mode == "distributed" else ("headless", USERS, seconds)
    run = run_suite(*shape, url, "--config", str(config), "--spawn-rate", USERS, "--no-analysis", "--", *selector,
                    results_root=tmp_path / name, timeout=120)
    return product, run


def assert_correct_service_passes(run, product: str, url: str) -> dict:
    assert run.returncode == 0, run.explain()
    summary = run.summary()
    consistency = summary["consistency"]
    assert consistency["passed"] is True and consistency["violations"] == [], consistency
    assert summary["user_classes"] == ["ContentionUser"]
    custom = summary["custom_stats"]
    assert custom["purchases"] == custom["units_sold"] == STOCK, custom  # exactly the stock was sold
    assert custom["insufficient_stock"] > 0, "the run must go on after the stock ran out"
    [buys] = [row for row in summary["endpoints"] if row["name"] == "Contention_Buy"]
    assert buys["failures"] == 0 and buys["requests"] == custom["purchases"] + custom["insufficient_stock"]
    assert catalogue(url)[product] == 0
    return summary


def assert_lost_updates_fail(run, product: str) -> list[dict]:
    """Exit 1, and a lost_update violation on the contended product whose evidence shows the two buys."""
    assert run.returncode == 1, run.explain()
    summary = run.summary()
    consistency = summary["consistency"]
    assert consistency["passed"] is False
    lost = [v for v in consistency["violations"] if v["kind"] == "lost_update"]
    assert lost, f"no lost_update among {[v['kind'] for v in consistency['violations']]}"
    for violation in lost:
        assert violation["product"] == product
        first, second = violation["evidence"][:2]
        assert first["outcome"] == second["outcome"] == "ok"
        assert first["remaining"] == second["remaining"] and first["product"] == second["product"] == product
    assert summary["custom_stats"]["purchases"] > STOCK  # more sold than there was: what the loss looks like
    assert any("consistency" in reason and "lost_update" in reason for reason in summary["verdict"]["reasons"])
    junit = ET.parse(run.folder / "junit.xml").getroot()
    [case] = [c for c in junit.findall("testcase") if c.get("classname") == "consistency"]
    failure = case.find("failure")
    assert failure is not None and f"lost_update: {product}" in failure.text
    return lost


# One process -------------------------------------------------------------------------------------------

def test_contention_against_the_reference_service_passes(tmp_path, service_factory):
    service = service_factory()
    product, run = contend(tmp_path, service.url, "headless", ("--tags", "contention"), "safe")
    summary = assert_correct_service_passes(run, product, service.url)
    assert summary["consistency"]["inconclusive"] == 0


@pytest.mark.parametrize("attempt", [1, 2])
def test_contention_against_unsafe_buy_reports_lost_updates_every_time(tmp_path, service_factory, attempt):
    service = service_factory("--unsafe-buy")
    product, run = contend(tmp_path, service.url, "headless", ("ContentionUser",), f"unsafe-{attempt}", seconds="4")
    lost = assert_lost_updates_fail(run, product)
    assert all(record["source"] == "local" for v in lost for record in v["evidence"])


# A master and two workers ------------------------------------------------------------------------------

def test_distributed_contention_against_the_reference_service_passes(tmp_path, service_factory):
    service = service_factory()
    product, run = contend(tmp_path, service.url, "distributed", ("ContentionUser",), "safe")
    summary = assert_correct_service_passes(run, product, service.url)
    assert summary["workers"] == {"count": 2, "lost": []}
    assert not summary["consistency"]["notes"], summary["consistency"]["notes"]  # every worker reported
    assert not run.survivors, run.survivors


def test_distributed_contention_against_unsafe_buy_names_worker_records(tmp_path, service_factory):
    service = service_factory("--unsafe-buy")
    product, run = contend(tmp_path, service.url, "distributed", ("--tags", "contention"), "unsafe")
    lost = assert_lost_updates_fail(run, product)
    sources = {record["source"] for v in lost for record in v["evidence"]}
    assert sources and all(WORKER_ID.match(source) for source in sources), sources
    assert run.summary()["workers"]["count"] == 2
    assert not run.survivors, run.survivors
