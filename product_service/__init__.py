"""Reference implementation of the product-service HTTP contract (the load-test suite's default target)."""

__version__ = "1.0.0"
