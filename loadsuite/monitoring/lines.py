"""InfluxDB line protocol: escaping, field values and lines, built once per point (never per request)."""
from __future__ import annotations

import math
from typing import Any, Optional


def _escape_key(text: str) -> str:
    """Escape a measurement, tag key, tag value or field key for line protocol."""
    return (str(text).replace("\\", "\\\\").replace("\n", " ").replace(",", "\\,")
            .replace("=", "\\=").replace(" ", "\\ "))


def _escape_string(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _field(value: Any) -> Optional[str]:
    """Line-protocol text of a numeric field value, or None for values that cannot be stored."""
    if isinstance(value, bool):
        return f"{int(value)}i"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return None


def _line(measurement: str, tags: str, fields: dict[str, Any], ts_ns: int) -> Optional[str]:
    parts = [f"{_escape_key(k)}={v}" for k, raw in fields.items() if (v := _field(raw)) is not None]
    if not parts:
        return None
    return f"{measurement}{tags} {','.join(parts)} {ts_ns}"


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested numeric values of a custom-stats dict as flat fields: {"a": {"b": 1}} -> {"a_b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        elif _field(value) is not None:
            flat[name] = value
    return flat
