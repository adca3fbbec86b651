"""SQLite storage for the products table: one connection, atomic buys, seeding from the catalogue.

The connection is used directly from the event loop, not from a thread pool: every statement
touches one short row of a tiny table that lives in the page cache, so a call takes a few
microseconds, while handing it to a worker thread would cost tens of microseconds and would
break the single-writer ordering that keeps the safe buy simple. The one call that can block
is a busy wait on a lock held by *another process* sharing the file (bounded by busy_timeout).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .catalog import Product

COLUMNS = ("name", "description", "price", "stock", "category")
BUSY_TIMEOUT_MS = 2000
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

_SCHEMA = """
CREATE TABLE products (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    price       REAL NOT NULL,
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    category    TEXT NOT NULL
)
"""


class StoreError(Exception):
    """The database file cannot be opened or used; the message names the fix."""


class ProductNotFound(Exception):
    """No product has this name."""


class InsufficientStock(Exception):
    """A buy asked for more than the stock; `available` is the stock at that moment."""

    def __init__(self, available: int) -> None:
        super().__init__(available)
        self.available = available


class Store:
    """The products table behind one SQLite connection owned by the event loop."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._local_writes = 0

    @classmethod
    def open(cls, path: Path, catalog: list[Product], *, reset: bool) -> "Store":
        """Open (creating and seeding if new, or reseeding with reset) the database at path."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for database {path}: {exc.strerror}; "
                             "choose a writable --db path") from None
        if path.is_dir():
            raise StoreError(f"database path {path} is a directory; pass a file path with --db")
        try:
            conn = sqlite3.connect(path, isolation_level=None, cached_statements=32)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}; choose a writable --db path") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across crashes of this process
            store = cls(conn)
            store._prepare(catalog, reset=reset)
        except sqlite3.DatabaseError as exc:
            conn.close()
            hint = ("it is not a SQLite database: delete it or choose another --db"
                    if "not a database" in str(exc) else "check the file's permissions or choose another --db")
            raise StoreError(f"cannot use database {path}: {exc}; {hint}") from None
        return store

    def _prepare(self, catalog: list[Product], *, reset: bool) -> None:
        columns = tuple(row[1] for row in self._conn.execute("PRAGMA table_info(products)"))
        if columns and not reset and columns != COLUMNS:
            raise StoreError(f"database has a products table with columns {columns}, expected {COLUMNS}; "
                             "rerun with --reset to reseed it")
        if reset or not columns:
            self.seed(catalog)
        else:
            # Take and release the write lock once, so a read-only file fails now and not on the first buy.
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("COMMIT")

    def seed(self, catalog: list[Product]) -> None:
        """Replace the whole table with the catalogue in one transaction."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DROP TABLE IF EXISTS products")
            conn.execute(_SCHEMA)
            conn.executemany("INSERT INTO products (name, description, price, stock, category) VALUES (?, ?, ?, ?, ?)",
                             [(p.name, p.description, p.price, p.stock, p.category) for p in catalog])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._local_writes += 1

    def version(self) -> tuple[int, int]:
        """Changes whenever the table may have changed: by this connection or another process."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0], self._local_writes

    def all_products(self) -> list[Product]:
        rows = self._conn.execute("SELECT name, description, price, stock, category FROM products ORDER BY rowid")
        return [Product(*row) for row in rows]

    def find(self, name: str) -> Product | None:
        row = self._conn.execute("SELECT name, description, price, stock, category FROM products WHERE name = ?",
                                 (name,)).fetchone()
        return Product(*row) if row else None

    def read_stock(self, name: str) -> int | None:
        row = self._conn.execute("SELECT stock FROM products WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def stocks(self) -> dict[str, int]:
        """Every product's stock: what a whole-file read of the Go service sees."""
        return dict(self._conn.execute("SELECT name, stock FROM products"))

    def write_stocks(self, stocks: dict[str, int]) -> None:
        """Write every given stock in one transaction: the Go service's whole-file rewrite."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("UPDATE products SET stock = ? WHERE name = ?", [(v, k) for k, v in stocks.items()])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._local_writes += 1

    def set_stock(self, name: str, stock: int) -> None:
        """Overwrite the stock of one product (the PATCH, and the unsafe buy's blind write)."""
        cursor = self._conn.execute("UPDATE products SET stock = ? WHERE name = ?", (stock, name))
        if cursor.rowcount == 0:
            raise ProductNotFound(name)
        self._local_writes += 1

    def buy(self, name: str, quantity: int) -> int:
        """Take quantity from the stock atomically and return what remains.

        One conditional UPDATE decides and writes in the same statement, so concurrent buyers
        (in this or another process) can neither oversell nor lose an update.
        """
        conn = self._conn
        if HAS_RETURNING:
            # fetchall steps the statement to completion, which ends its implicit transaction.
            rows = conn.execute("UPDATE products SET stock = stock - ? WHERE name = ? AND stock >= ? RETURNING stock",
                                (quantity, name, quantity)).fetchall()
            row = rows[0] if rows else None
        else:  # pragma: no cover - SQLite older than 3.35
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("UPDATE products SET stock = stock - ? WHERE name = ? AND stock >= ?",
                             (quantity, name, quantity))
                row = conn.execute("SELECT stock FROM products WHERE name = ? AND changes() = 1", (name,)).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if row is not None:
            self._local_writes += 1
            return row[0]
        available = self.read_stock(name)
        if available is None:
            raise ProductNotFound(name)
        raise InsufficientStock(available)

    def close(self) -> None:
        self._conn.close()
