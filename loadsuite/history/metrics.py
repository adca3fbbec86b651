"""The metrics a run history follows, and how each is read from a run's summary.json and capacity.json.

Per request name (and the total): p50/p95/p99, error rate and throughput from summary.json. For the run as a
whole: the oracle's violations (consistency) from summary.json, and capacity from capacity.json where the
capacity finder ran. capacity.json is read for `capacity_rps` and `capacity_users` (top level, or inside a
`capacity` object), and per request from `endpoints: [{"name", "method", "capacity_rps"}]`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TOTAL = ("", "Total")  # the key of the all-requests row, as compare.py keys it


@dataclass(frozen=True)
class Metric:
    """One followed metric: where it comes from, which way is worse, and how its change is judged."""

    key: str
    label: str
    unit: str
    higher_is_worse: bool
    log_scale: bool  # detected on logarithms: a latency or a rate changes by a factor, not by a number of ms
    floor: float  # the least noise worth calling noise, in detection units (a log ratio, or the unit itself)
    judged_as: str  # the compare.judge rule its tolerance follows ("p95", "failure_rate", "rps"), or "count"
    whole_run: bool = False  # only the run as a whole has it (the Total row)

    def detection_value(self, value: float) -> float:
        return math.log(max(value, 1e-3)) if self.log_scale else value


METRICS: tuple[Metric, ...] = (
    Metric("p50", "p50", "ms", True, True, 0.01, "p50"),
    Metric("p95", "p95", "ms", True, True, 0.01, "p95"),
    Metric("p99", "p99", "ms", True, True, 0.01, "p99"),
    Metric("error_rate", "error rate", "%", True, False, 0.05, "failure_rate"),
    Metric("rps", "throughput", "req/s", False, True, 0.01, "rps"),
    Metric("violations", "consistency: oracle violations", "count", True, False, 0.5, "count", whole_run=True),
    Metric("capacity_rps", "capacity", "req/s", False, True, 0.01, "rps"),
    Metric("capacity_users", "capacity (users)", "users", False, True, 0.01, "rps", whole_run=True),
)
BY_KEY = {metric.key: metric for metric in METRICS}

Values = dict[tuple[str, str], dict[str, float]]  # (method, name) -> metric key -> value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _request_values(row: dict[str, Any], min_samples: int) -> dict[str, float]:
    requests = _number(row.get("requests"))
    if requests is None or requests <= 0 or requests < min_samples:
        return {}  # too few requests: its percentiles and rates are noise, this run says nothing about it
    out = {}
    for key, field, factor in (("p50", "p50_ms", 1), ("p95", "p95_ms", 1), ("p99", "p99_ms", 1),
                               ("error_rate", "error_rate", 100.0), ("rps", "rps", 1)):
        value = _number(row.get(field))
        if value is not None:
            out[key] = value * factor
    return out


def summary_values(summary: dict[str, Any], min_samples: int) -> Values:
    """Every followed metric of one run from its summary.json (requests with fewer than min_samples left out)."""
    values: Values = {}
    for row in summary.get("endpoints") or []:
        if isinstance(row, dict) and row.get("name"):
            found = _request_values(row, min_samples)
            if found:
                values[(str(row.get("method") or ""), str(row["name"]))] = found
    totals = summary.get("totals") if isinstance(summary.get("totals"), dict) else {}
    total = _request_values(totals, min_samples)
    consistency = summary.get("consistency") if isinstance(summary.get("consistency"), dict) else {}
    violations = _number(consistency.get("violations_total"))
    if consistency.get("enabled") and violations is not None:
        total["violations"] = violations
    if total:
        values[TOTAL] = total
    return values


def add_capacity(values: Values, capacity: dict[str, Any]) -> list[str]:
    """Capacity figures from capacity.json into the run's values; returns what could not be read (notes)."""
    whole = capacity.get("capacity") if isinstance(capacity.get("capacity"), dict) else capacity
    found = False
    for key, field in (("capacity_rps", "rps"), ("capacity_users", "users")):
        value = _number(whole.get(key, whole.get(field) if whole is not capacity else None))
        if value is not None and value > 0:
            values.setdefault(TOTAL, {})[key] = value
            found = True
    for row in capacity.get("endpoints") or []:
        value = _number(row.get("capacity_rps")) if isinstance(row, dict) and row.get("name") else None
        if value is not None and value > 0:
            values.setdefault((str(row.get("method") or ""), str(row["name"])), {})["capacity_rps"] = value
            found = True
    return [] if found else ["no capacity_rps or capacity_users in it"]
