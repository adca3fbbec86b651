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
from collections.abc import Iterable
from itertools import accumulate

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

    def __len__(self) -> int:
        return len(self._products)

    def refresh_all(self, products: Iterable[Product]) -> None:
        """Replace the whole view with a full listing (GET /products); its order carries no meaning."""
        fresh: dict[str, Product] = {product["name"]: product for product in products}
        with self._lock:
            if len(fresh) > self.max_products:
                fresh = self._bounded(fresh)
            membership_changed = fresh.keys() != self._products.keys()
            self._products = fresh
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
            products[name] = product
            return
        if len(products) >= self.max_products:
            oldest = next(iter(products))
            del products[oldest]
            self._names.remove(oldest)
        products[name] = product
        self._names.append(name)
        self._reindex()

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
            if self._products.pop(name, None) is not None:
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
