"""One renderer for numbers: every output (console, summary.md, junit.xml, the web tab) shows the same digits.

Milliseconds keep three significant digits below 100 ms, so a 0.001 ms limit never reads as "0 ms";
rates are percentages everywhere; a missing value is "-" in tables and "no requests" in verdict rows.
"""
from __future__ import annotations

import math

MISSING = "-"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("nan", "NaT", "<NA>")


def fmt_ms(value) -> str:
    """Milliseconds without the unit: 1,234 / 123 / 12.3 / 1.23 / 0.001 (three significant digits below 100)."""
    if _missing(value):
        return MISSING
    value = float(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.2g}"


def fmt_percent(rate) -> str:
    """A share (0.1156) as a percentage (11.56%); tiny non-zero shares keep two significant digits (0.0012%)."""
    if _missing(rate):
        return MISSING
    points = float(rate) * 100
    if points == 0 or abs(points) >= 0.01:
        return f"{points:.2f}%"
    return f"{points:.2g}%"


def fmt_points(points) -> str:
    """A value already in percent (failure % columns): 11.56%."""
    return MISSING if _missing(points) else fmt_percent(float(points) / 100)


SMALL_SAMPLE = 20  # fewer requests than this: percentiles are marked (a p99 of 11 samples is its maximum)
SMALL_SAMPLE_MARK = "*"


def fmt_sample(count, percentile_text: str) -> str:
    """A percentile cell of a row with few requests carries a mark, explained under every table."""
    if _missing(count) or percentile_text == MISSING or int(count) >= SMALL_SAMPLE:
        return percentile_text
    return percentile_text + SMALL_SAMPLE_MARK


def small_sample_note() -> str:
    return f"{SMALL_SAMPLE_MARK} fewer than {SMALL_SAMPLE} requests: percentiles are rough."


def ordered_percentiles(p50, p95, p99, lowest=None, highest=None) -> tuple:
    """The one percentile rule: Locust's histogram percentiles clamped to [min, max] and made monotone,
    so p50 <= p95 <= p99 on every row of every output (Locust's median and a rounded bucket can disagree
    on rows with one or two samples)."""
    values = []
    floor = None
    for value in (p50, p95, p99):
        if _missing(value):
            values.append(None)
            continue
        value = float(value)
        if not _missing(highest):
            value = min(value, float(highest))
        if not _missing(lowest):
            value = max(value, float(lowest))
        if floor is not None:
            value = max(value, floor)
        floor = value
        values.append(value)
    return tuple(values)


def fmt_num(value, digits: int = 2) -> str:
    return MISSING if _missing(value) else f"{float(value):.{digits}f}"


def fmt_rps(value) -> str:
    return MISSING if _missing(value) else f"{float(value):.1f} req/s"


def fmt_count(value) -> str:
    return MISSING if _missing(value) else f"{int(value):,}"


def fmt_metric(metric: str, value, missing: str = "no requests") -> str:
    """A threshold's limit or observed value in its metric's unit: error_rate %, *_ms ms, *rps req/s."""
    if _missing(value):
        return missing
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if metric in ("error_rate", "failure_rate"):
        return fmt_percent(value)
    if metric.endswith("rps"):
        return fmt_rps(value)
    if metric.endswith("_ms"):
        return f"{fmt_ms(value)} ms"
    return f"{value:g}"
