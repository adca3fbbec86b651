"""Attach (event name, listener) pairs to Locust's events: the one loop event_hooks.register uses."""
from __future__ import annotations

from collections.abc import Callable, Iterable


def attach_listeners(events, pairs: Iterable[tuple[str, Callable]]) -> None:
    for event, listener in pairs:
        getattr(events, event).add_listener(listener)
