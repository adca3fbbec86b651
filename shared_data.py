"""The shared product cache of one load-generator process: what the users last saw of the catalogue.

Keyed by product name (the contract has no id). Products are the dicts parsed from responses,
stored without copying; the cache may update a stored product's "stock" in place, so callers
treat returned products as read-only. Every method holds one threading.Lock for a few dict
operations and never does I/O while holding it. Locust's gevent monkey-patching turns that lock
into a gevent lock (create the cache after locust is imported, as the locustfile does, with
cache.max_products from config.yaml); with real threads it is an ordinary mutex.

Popularity: with skew s > 0 the random choices follow a Zipf law, as real shops see (a few best-sellers
take most of the traffic): the k-th cached name in sorted order has weight 1/k^s. Sorted by name, not by
arrival, so every worker agrees on the best-sellers whatever order GET /products lists them in. The
cumulative weights are rebuilt only when the cached names change; a choice is one bisect.
"""
from __future__ import annotations

import random
import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from itertools import accumulate
from types import MappingProxyType

Product = dict


class ProductCache:
    """A bounded name -> product map with random choice (uniform O(1), or Zipf-skewed by one bisect); the
    oldest entry is evicted first."""

    def __init__(self, max_products: int, rng: random.Random | None = None, skew: float = 0.0) -> None:
        if max_products < 1:
            raise ValueError("max_products must be at least 1")
        if skew < 0:
            raise ValueError("skew must be at least 0")
        self.max_products = max_products
        self.skew = skew
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._products: dict[str, Product] = {}  # insertion order = age, for eviction
        self._names: list[str] = []  # same membership as _products, for random choice (sorted when skewed)
        self._weights: list[float] = []  # cumulative Zipf weights of _names (skew > 0 only)
        self._by_category: dict[str, set[str]] = {}  # category -> cached names: what a category listing must hold

    def __len__(self) -> int:
        return len(self._products)

    def clear(self) -> None:
        """Forget everything (a new test: in a web UI session it may target another host with another catalogue)."""
        with self._lock:
            self._products, self._names, self._weights, self._by_category = {}, [], [], {}

    def refresh_all(self, products: Iterable[Product]) -> None:
        """Replace the whole view with a full listing (GET /products); its order carries no meaning."""
        fresh: dict[str, Product] = {product["name"]: product for product in products}
        with self._lock:
            if len(fresh) > self.max_products:
                fresh = self._bounded(fresh)
            membership_changed = fresh.keys() != self._products.keys()
            self._products = fresh
            by_category: dict[str, set[str]] = {}
            for name, product in fresh.items():
                by_category.setdefault(product.get("category"), set()).add(name)
            self._by_category = by_category
            if membership_changed:
                self._names = list(fresh)
                self._reindex()

    def _bounded(self, fresh: dict[str, Product]) -> dict[str, Product]:
        """Keep names already cached first so membership stays stable when the catalogue is too big."""
        kept = {name: fresh[name] for name in self._products if name in fresh}
        for name, product in fresh.items():
            if len(kept) >= self.max_products:
                break
            kept.setdefault(name, product)
        return dict(list(kept.items())[: self.max_products])

    def merge(self, products: Iterable[Product]) -> None:
        """Add or replace some products (a category listing) without dropping others."""
        with self._lock:
            for product in products:
                self._put(product)

    def upsert(self, product: Product) -> None:
        """Add or replace one product (a details response)."""
        with self._lock:
            self._put(product)

    def _put(self, product: Product) -> None:
        name = product["name"]
        products = self._products
        if name in products:
            self._file(name, products[name].get("category"), product.get("category"))
            products[name] = product
            return
        if len(products) >= self.max_products:
            oldest = next(iter(products))
            self._file(oldest, products.pop(oldest).get("category"), None)
            self._names.remove(oldest)
        products[name] = product
        self._file(name, None, product.get("category"))
        self._names.append(name)
        self._reindex()

    def _file(self, name: str, was: str | None, now: str | None) -> None:
        """Keep the category index in step with one product (the caller holds the lock)."""
        if was == now:
            return
        if was is not None:
            names = self._by_category.get(was)
            if names is not None:
                names.discard(name)
        if now is not None:
            self._by_category.setdefault(now, set()).add(name)

    def set_stock(self, name: str, stock: int) -> bool:
        """Record a stock level the service reported (buy remainingStock, PATCH); False if not cached."""
        with self._lock:
            product = self._products.get(name)
            if product is None:
                return False
            product["stock"] = stock
            return True

    def discard(self, name: str) -> None:
        """Forget a product the service no longer knows (404)."""
        with self._lock:
            product = self._products.pop(name, None)
            if product is not None:
                self._file(name, product.get("category"), None)
                self._names.remove(name)
                self._reindex()

    def _reindex(self) -> None:
        """After a change of membership: sort the names and rebuild the cumulative Zipf weights (skewed only)."""
        if self.skew > 0:
            self._names.sort()
            self._weights = list(accumulate(1.0 / rank ** self.skew for rank in range(1, len(self._names) + 1)))

    def _pick(self) -> int:
        """The index of a random name: uniform, or by Zipf weight (the caller holds the lock; names not empty)."""
        if self.skew > 0:
            weights = self._weights
            return min(bisect_right(weights, self._rng.random() * weights[-1]), len(weights) - 1)
        return int(self._rng.random() * len(self._names))

    def get(self, name: str) -> Product | None:
        return self._products.get(name)

    def known(self, category: str | None = None) -> Mapping[str, Product]:
        """{name: product} of what the service has listed so far (in `category`, or all): a later listing must hold
        them again, unchanged but for their stock (the validators' catalogue cross-check). All: a read-only view of
        the listing the cache holds now (O(1): refresh_all replaces that dict, it never changes its names); a
        category: a copy, O(its products)."""
        with self._lock:
            if category is None:
                return MappingProxyType(self._products)
            products = self._products
            return {name: products[name] for name in self._by_category.get(category, ())}

    def random_product(self) -> Product | None:
        """A random cached product (uniform, or by popularity when skewed), or None when the cache is empty."""
        with self._lock:
            names = self._names
            if not names:
                return None
            return self._products[names[self._pick()]]

    def random_in_stock(self, min_stock: int = 1, attempts: int = 8) -> Product | None:
        """A random product with stock >= min_stock, or None if no cached product has that much."""
        with self._lock:
            names, products, rng = self._names, self._products, self._rng
            if not names:
                return None
            pick = self._pick
            for _ in range(attempts):  # usually most products are in stock: a few random probes suffice
                product = products[names[pick()]]
                if product.get("stock", 0) >= min_stock:
                    return product
            candidates = [p for p in products.values() if p.get("stock", 0) >= min_stock]
            return rng.choice(candidates) if candidates else None

    def names(self) -> list[str]:
        """A copy of the cached names."""
        with self._lock:
            return list(self._names)
