"""One rule for reading a response header from either Locust client."""
from __future__ import annotations

from typing import Any


def header(headers: Any, name: str) -> str | None:
    """The header's value, or None. geventhttpclient hands a header given more than once as a list: it counts
    only when every copy agrees (two different Content-Lengths or Content-Types mean none is known)."""
    if headers is None:
        return None
    value = headers.get(name)
    if isinstance(value, list):
        return value[0] if value and all(item == value[0] for item in value) else None
    return value
