"""The run's verdict: SLO thresholds against Locust's stats plus the oracle, as summary.json and junit.xml.

Exit codes: 0 every threshold and the oracle passed, 1 something failed. (2 bad configuration and 3
target unreachable are decided before any traffic, by config_loader and run_tests.sh.)
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from . import junit
from .console import consistency_counts, verdict_block, violation_counts  # noqa: F401 - re-exported
from .format import fmt_metric, ordered_percentiles

METRICS = ("error_rate", "p95_ms", "p99_ms", "avg_ms", "min_rps")


@dataclass(frozen=True)
class ThresholdResult:
    metric: str
    scope: str
    limit: float
    observed: float | None
    passed: bool

    def describe(self) -> str:
        observed = "no requests" if self.observed is None else fmt_metric(self.metric, self.observed)
        relation = ">=" if self.metric == "min_rps" else "<="
        mark = "pass" if self.passed else "FAIL"
        return f"{mark}: {self.metric} {self.scope}: observed {observed}, limit {relation} {fmt_metric(self.metric, self.limit)}"


def _number(value: float | None, digits: int = 2) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def entry_metrics(entry) -> dict[str, Any]:
    """The numbers summary.json and the thresholds use, from one Locust StatsEntry."""
    requests = entry.num_requests
    called = requests > 0
    p50, p95, p99 = ordered_percentiles(
        *(entry.get_response_time_percentile(q) for q in (0.5, 0.95, 0.99)),
        lowest=entry.min_response_time, highest=entry.max_response_time) if called else (None, None, None)
    return {
        "requests": requests,
        "failures": entry.num_failures,
        "error_rate": _number(entry.num_failures / requests if called else 0.0, 5),
        "rps": _number(entry.total_rps),
        "avg_ms": _number(entry.avg_response_time) if called else None,
        "min_ms": _number(entry.min_response_time) if called else None,
        "max_ms": _number(entry.max_response_time) if called else None,
        "p50_ms": _number(p50),
        "p95_ms": _number(p95),
        "p99_ms": _number(p99),
    }


def endpoint_rows(stats) -> list[dict[str, Any]]:
    rows = [{"name": entry.name, "method": entry.method, **entry_metrics(entry)}
            for entry in stats.entries.values()]
    return sorted(rows, key=lambda row: (row["name"], row["method"] or ""))


def _observed(metrics: dict[str, Any], metric: str) -> float | None:
    if metrics["requests"] == 0:
        return None
    return {"error_rate": metrics["error_rate"], "p95_ms": metrics["p95_ms"], "p99_ms": metrics["p99_ms"],
            "avg_ms": metrics["avg_ms"], "min_rps": metrics["rps"]}[metric]


def _judge(metric: str, scope: str, limit: float, observed: float | None) -> ThresholdResult:
    if observed is None:
        return ThresholdResult(metric, scope, limit, None, False)
    passed = observed >= limit if metric == "min_rps" else observed <= limit
    return ThresholdResult(metric, scope, limit, observed, passed)


def evaluate_thresholds(totals: dict[str, Any], endpoints: Iterable[dict[str, Any]], thresholds) -> list[ThresholdResult]:
    """Every configured limit against what was observed; a limit with nothing to measure fails."""
    results = []
    for metric in METRICS:
        limit = getattr(thresholds, metric)
        if limit is not None:
            results.append(_judge(metric, "total", limit, _observed(totals, metric)))
    by_name = {row["name"]: row for row in endpoints}
    for name, limits in sorted(thresholds.per_request.items()):
        metrics = by_name.get(name, {"requests": 0})
        for metric in METRICS:
            limit = getattr(limits, metric)
            if limit is not None:
                results.append(_judge(metric, name, limit, _observed(metrics, metric)))
    return results


def decide(thresholds: list[ThresholdResult], consistency: dict[str, Any], require_consistency: bool) -> dict[str, Any]:
    """Pass only when every threshold passed and the oracle did not find a violation (when required)."""
    reasons = [result.describe() for result in thresholds if not result.passed]
    if require_consistency and consistency.get("enabled") and consistency.get("passed") is False:
        counts = violation_counts(consistency)
        count = consistency.get("violations_total") or sum(counts.values()) or len(consistency.get("violations", []))
        kinds = sorted(counts)
        reasons.append(f"FAIL: consistency: {count} violation(s): {', '.join(kinds)}")
    passed = not reasons
    return {"passed": passed, "exit_code": 0 if passed else 1, "reasons": reasons}


def verdict_table(summary: dict[str, Any], folder: Path | str | None = None, colour: bool = False) -> str:
    """The verdict block for the end of a run (one renderer: reporting/console.py)."""
    return verdict_block(summary, folder if folder is not None else Path("results") / str(summary.get("run_id", "")),
                         colour)


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    path = Path(folder) / "summary.json"
    _atomic_write(path, json.dumps(summary, indent=2, sort_keys=False, default=str))
    return path


def junit_cases(summary: dict[str, Any]) -> list[junit.Case]:
    """One test case per threshold and one for consistency."""
    cases = [junit.Case("thresholds", f"{row['metric']} {row['scope']}",
                        failure=None if row["passed"] else ThresholdResult(**row).describe())
             for row in summary["thresholds"]]
    consistency = summary["consistency"]
    if consistency.get("enabled"):
        state = consistency.get("passed")
        if state is False:
            counts = consistency_counts(consistency)
            details = "\n".join([f"violations by kind: {counts}"] * bool(counts) +
                                [f"{v['kind']}: {v['product']}: {v['message']}" for v in consistency.get("violations", [])])
            cases.append(junit.Case("consistency", "inventory oracle", details=details,
                                    failure="inventory consistency violated" + (f": {counts}" if counts else "")))
        elif state is None:
            cases.append(junit.Case("consistency", "inventory oracle",
                                    skipped="inconclusive: " + str(consistency.get("note", "no product could be decided"))))
        else:
            cases.append(junit.Case("consistency", "inventory oracle"))
    return cases


def write_junit(folder: Path, summary: dict[str, Any]) -> Path:
    return junit.write(folder, "load test " + str(summary["run_id"]), junit_cases(summary),
                       summary.get("duration_s") or 0)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def threshold_dicts(results: list[ThresholdResult]) -> list[dict[str, Any]]:
    return [asdict(result) for result in results]
