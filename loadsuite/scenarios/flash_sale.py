"""The flash sale (flash_sale in config.yaml): a scenario that interrupts the shop's weighted mix.

`start_seconds` into a test the sale opens: the first buyer of each load-generator process to arrive restocks
the best-seller to `stock` (a stock update the oracle records), and every user whose mix buys (buy_product is
among its tasks after --tags) stops what it does to buy that product, one unit at a time with no think time,
until it is told the product is sold out or `duration_seconds` have passed; then it goes back to its mix.
Single-unit buys by many users at once make a service that loses concurrent updates fail the oracle.

The locustfile writes the two requests (`ShopUser.flash_sale_buy`, `ShopUser.open_flash_sale`); this module
decides when a user runs them: `ShopTaskSet.get_next_task` asks `FlashSale.next_task` first, so both the
closed model (Locust's task loop) and the open model (the executor, one task per arrival) pick sale buys
while the sale is open, and `think_time` cuts a buyer's wait short so that the rush starts at once.
"""
from __future__ import annotations

import time
from typing import Callable

from gevent.event import Event
from locust.exception import RescheduleTaskImmediately
from locust.user.task import DefaultTaskSet

from ..config.schema import FlashSaleConfig

BUYING_TASK = "buy_product"  # a user type whose mix (after --tags) has this task joins the sale


class _Opening:
    """One test's sale in this process: opened once, by the first buyer to arrive."""

    __slots__ = ("run", "product", "stocked", "opened")

    def __init__(self, run: float | None = None) -> None:
        self.run = run  # the test (its start time) this opening belongs to
        self.product: str | None = None
        self.stocked = False
        self.opened = Event()  # set once the opening stock update has answered (stocked or not)


class FlashSale:
    """When the sale is open for a user, and what that user does then (the two request blocks come from the
    locustfile: `buy(user, product)` returns whether the product is sold out, `restock(user) -> product or None`)."""

    def __init__(self, config: FlashSaleConfig, buy: Callable, restock: Callable, wait_s: float) -> None:
        self.config = config
        self._buy, self._restock, self._wait_s = buy, restock, wait_s
        self._run: float | None = None  # the current test's start (epoch seconds), None before the first
        self._opening = _Opening()

    def begin(self, test) -> None:
        """A new test (SuiteRun resets every part when one starts): its sale is not open yet."""
        self._run, self._opening = test.started_at, _Opening()

    def open_at(self, run: float | None, now: float) -> bool:
        """The sale of the test that started at `run` is open at `now` (one clock read per pick)."""
        config = self.config
        return run is not None and config.start_seconds <= now - run < config.start_seconds + config.duration_seconds

    def next_task(self, user) -> Callable | None:
        """The sale's task for this user now, or None: Locust's weighted pick."""
        if not self.config.enabled:
            return None
        run = self._run
        if getattr(user, "flash_sale_left", None) == run or not self.open_at(run, time.time()) or not joins(user):
            user.flash_sale_buying = False
            return None
        opening = self._opening
        if opening.run != run:  # the first buyer of this test in this process opens it
            self._opening = _Opening(run)
            return self._open_and_buy
        if opening.opened.is_set() and not opening.stocked:
            return None  # the opening stock update failed: no sale in this process
        return self._buy_one

    def think_time(self, user, think: float) -> float:
        """A closed-model user's wait: none inside the sale, cut to the opening for a buyer who would miss it."""
        if getattr(user, "flash_sale_buying", False):
            return 0.0
        run = self._run
        if self.config.enabled and run is not None and getattr(user, "flash_sale_left", None) != run and joins(user):
            until_sale = run + self.config.start_seconds - time.time()
            if 0 < until_sale < think:
                return until_sale
        return think

    # The sale's two tasks (a user runs them through ShopTaskSet) ----------------------------------------

    def _open_and_buy(self, user) -> None:
        opening = self._opening
        try:
            opening.product = self._restock(user)
            opening.stocked = opening.product is not None
        finally:
            opening.opened.set()
        if opening.stocked:
            self._buy_one(user)

    def _buy_one(self, user) -> None:
        opening = self._opening
        if not opening.opened.is_set():  # the others wait for the opening stock update instead of thinking again
            opening.opened.wait(timeout=self._wait_s)
        if not opening.stocked:
            raise RescheduleTaskImmediately()  # no sale here after all: the user's own mix, without a wait
        user.flash_sale_buying = True
        if self._buy(user, opening.product):  # sold out: back to the mix
            user.flash_sale_left, user.flash_sale_buying = opening.run, False


def joins(user) -> bool:
    """buy_product is still among the user's class's tasks after --tags/--exclude-tags (asked once per class)."""
    cls = type(user)
    buys = cls.__dict__.get("_joins_flash_sale")
    if buys is None:
        buys = any(getattr(task, "__name__", "") == BUYING_TASK for task in cls.tasks)
        cls._joins_flash_sale = buys
    return buys


class ShopTaskSet(DefaultTaskSet):
    """The root TaskSet of the shop's users: the flash sale's task while it is open for the user (the user's
    class names its sale as `flash_sale`), else Locust's weighted pick of the user's tasks. ShopUser.on_start
    installs it: Locust makes the root TaskSet just before on_start and runs it right after (the open model's
    executor reads it after on_start too)."""

    def get_next_task(self):
        sale = getattr(self.user, "flash_sale", None)
        if sale is not None:
            task = sale.next_task(self.user)
            if task is not None:
                return task
        return super().get_next_task()
