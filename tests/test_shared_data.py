"""ProductCache: bounded, keyed by name, random choice, and safe under real threads and greenlets."""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import pytest

import shared_data
from shared_data import ProductCache
from tests.conftest import ROOT


def product(name: str, stock: int = 10, category: str = "Books") -> dict:
    return {"name": name, "description": "", "price": 1.0, "stock": stock, "category": category}


def consistent(cache: ProductCache) -> bool:
    names = cache.names()
    return len(names) == len(set(names)) == len(cache) and set(names) == set(cache._products)


def test_refresh_all_replaces_the_view_without_copying():
    cache = ProductCache(10)
    cache.refresh_all([product("a"), product("b")])
    listed = [product("b"), product("c")]
    cache.refresh_all(listed)
    assert sorted(cache.names()) == ["b", "c"]
    assert cache.get("a") is None
    assert cache.get("c") is listed[1]
    assert consistent(cache)


def test_refresh_all_with_same_names_in_another_order_keeps_them_all():
    cache = ProductCache(10)
    cache.refresh_all([product(n) for n in "abc"])
    cache.refresh_all([product(n, stock=1) for n in "cab"])
    assert sorted(cache.names()) == ["a", "b", "c"] and cache.get("a")["stock"] == 1
    assert consistent(cache)


def test_refresh_all_beyond_the_bound_keeps_cached_names_first():
    cache = ProductCache(3)
    cache.refresh_all([product("x"), product("y")])
    cache.refresh_all([product(n) for n in "abcdxy"])
    names = set(cache.names())
    assert len(names) == 3 and {"x", "y"} <= names
    assert consistent(cache)


def test_merge_adds_and_evicts_the_oldest():
    cache = ProductCache(3)
    cache.merge([product("a"), product("b"), product("c")])
    cache.merge([product("d", category="Furniture")])
    assert sorted(cache.names()) == ["b", "c", "d"]
    cache.upsert(product("b", stock=99))  # replacing an entry evicts nothing
    assert len(cache) == 3 and cache.get("b")["stock"] == 99
    assert consistent(cache)


def test_set_stock_updates_a_cached_product_only():
    cache = ProductCache(5)
    cache.upsert(product("a", stock=10))
    assert cache.set_stock("a", 4) is True
    assert cache.get("a")["stock"] == 4
    assert cache.set_stock("missing", 4) is False
    assert cache.get("missing") is None and len(cache) == 1


def test_discard_forgets_a_product():
    cache = ProductCache(5)
    cache.merge([product("a"), product("b")])
    cache.discard("a")
    cache.discard("never-cached")
    assert cache.names() == ["b"] and consistent(cache)


def test_random_choices_on_an_empty_cache_are_none():
    cache = ProductCache(5)
    assert cache.random_product() is None and cache.random_in_stock() is None


def test_random_product_reaches_every_product():
    cache = ProductCache(10, rng=random.Random(1))
    cache.refresh_all([product(n) for n in "abcde"])
    seen = {cache.random_product()["name"] for _ in range(200)}
    assert seen == set("abcde")


def test_random_in_stock_finds_the_only_product_with_enough_stock():
    cache = ProductCache(200, rng=random.Random(2))
    cache.refresh_all([product(f"empty-{i}", stock=0) for i in range(150)] + [product("full", stock=5)])
    for _ in range(20):
        assert cache.random_in_stock()["name"] == "full"
    assert cache.random_in_stock(min_stock=6) is None


def test_bound_must_be_positive():
    with pytest.raises(ValueError):
        ProductCache(0)


# The concurrency tests run in a fresh interpreter so the kind of lock is certain: a plain
# threading.Lock for real threads, gevent's lock after monkey-patching (as under Locust).
STRESS = textwrap.dedent('''
    import random, sys, time
    MODE = sys.argv[1]
    if MODE == "gevent":
        from gevent import monkey
        monkey.patch_all()
        import gevent
    import threading
    from shared_data import ProductCache

    MAX, WORKERS, ITERATIONS = 40, int(sys.argv[2]), int(sys.argv[3])
    cache = ProductCache(MAX)
    lock_module = type(cache._lock).__module__
    assert lock_module.startswith("gevent") == (MODE == "gevent"), lock_module
    catalogue = [{"name": f"p{i}", "description": "", "price": 1.0, "stock": i % 5, "category": "C"}
                 for i in range(60)]
    errors = []
    deadline = time.monotonic() + 20

    def work(worker):
        rng = random.Random(worker)
        own = f"own-{worker}"
        try:
            for i in range(ITERATIONS):
                if time.monotonic() > deadline:
                    raise RuntimeError("stress loop ran out of time")
                op = rng.randrange(8)
                if op == 0:
                    cache.refresh_all([dict(p) for p in rng.sample(catalogue, rng.randrange(20, 60))])
                elif op == 1:
                    cache.merge([dict(p) for p in rng.sample(catalogue, 5)])
                elif op == 2:
                    cache.upsert({"name": own, "description": "", "price": 1.0, "stock": 0, "category": "C"})
                elif op == 3:
                    value = rng.randrange(1, 1000)
                    if cache.set_stock(own, value):
                        seen = cache.get(own)  # only this worker writes its own product: no lost update
                        assert seen is None or seen["stock"] == value, (seen, value)
                elif op == 4:
                    p = cache.random_product()
                    assert p is None or isinstance(p["name"], str)
                elif op == 5:
                    p = cache.random_in_stock(min_stock=2)
                    assert p is None or p["stock"] >= 2
                elif op == 6:
                    names = cache.names()
                    assert len(names) <= MAX and len(names) == len(set(names)), len(names)
                else:
                    assert len(cache) <= MAX
                if MODE == "gevent" and rng.random() < 0.3:
                    gevent.sleep(0)
        except BaseException as error:
            errors.append(repr(error))

    if MODE == "gevent":
        gevent.joinall([gevent.spawn(work, w) for w in range(WORKERS)], timeout=30)
    else:
        sys.setswitchinterval(1e-5)  # switch threads often to provoke races
        threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
        for t in threads: t.start()
        for t in threads: t.join(30)
    names = cache.names()
    assert not errors, errors[:3]
    assert len(names) == len(set(names)) == len(cache) <= MAX
    assert set(names) == set(cache._products)
    print("ok", len(names))
''')


@pytest.mark.parametrize("mode, workers, iterations", [("threads", 8, 4000), ("gevent", 50, 600)])
def test_concurrent_access_keeps_the_cache_consistent(mode, workers, iterations):
    result = subprocess.run([sys.executable, "-c", STRESS, mode, str(workers), str(iterations)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok ")


# Popularity (Zipf skew) --------------------------------------------------------------------------------

def picks(cache: ProductCache, count: int, in_stock: bool = False) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(count):
        chosen = cache.random_in_stock() if in_stock else cache.random_product()
        seen[chosen["name"]] = seen.get(chosen["name"], 0) + 1
    return seen


def test_skewed_choice_follows_zipf_by_name_order():
    names = [f"product {i:02d}" for i in range(20)]
    cache = ProductCache(100, rng=random.Random(7), skew=1.0)
    cache.refresh_all([product(n) for n in reversed(names)])
    seen = picks(cache, 40_000)
    harmonic = sum(1 / k for k in range(1, 21))
    for rank in (1, 2, 5, 20):
        expected = 40_000 / (rank * harmonic)
        assert abs(seen.get(names[rank - 1], 0) - expected) < 0.1 * expected + 60, (rank, seen)


def test_the_order_a_listing_arrives_in_never_changes_which_products_are_popular():
    """GET /products lists in random order on the real service: the same seed must pick the same products."""
    names = [f"p{i}" for i in range(15)]
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    by_order = []
    for order in (names, shuffled, list(reversed(names))):
        cache = ProductCache(100, rng=random.Random(11), skew=1.2)
        cache.refresh_all([product(n) for n in order])
        by_order.append([cache.random_product()["name"] for _ in range(200)])
    assert by_order[0] == by_order[1] == by_order[2]
    merged = ProductCache(100, rng=random.Random(11), skew=1.2)
    for name in shuffled:  # details answers one at a time, in any order
        merged.upsert(product(name))
    assert [merged.random_product()["name"] for _ in range(200)] == by_order[0]


def test_skewed_in_stock_choice_skips_sold_out_best_sellers_and_membership_changes_reindex():
    cache = ProductCache(3, rng=random.Random(1), skew=2.0)
    cache.refresh_all([product("a", stock=0), product("b"), product("c")])
    assert "a" not in picks(cache, 500, in_stock=True)
    cache.upsert(product("0-new"))  # evicts the oldest ("a"); the newcomer sorts first: the new best-seller
    seen = picks(cache, 2_000)
    assert set(seen) == {"0-new", "b", "c"} and seen["0-new"] > seen["b"] > seen["c"]
    cache.discard("0-new")
    assert set(picks(cache, 200)) == {"b", "c"} and consistent(cache)


def test_a_negative_skew_is_refused():
    with pytest.raises(ValueError, match="skew"):
        ProductCache(10, skew=-0.5)
