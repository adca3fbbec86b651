"""The trend charts of a run history (PNG): the whole run's metrics, and every request's, with change points marked.

Each panel shows one metric over the group's runs (dots), the median of each stretch between change points
(the grey steps) and each change point as a vertical line where the new level starts: red when it regressed
beyond the tolerance, orange when worse within it, green when better.
"""
from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..reporting.charts import PERCENTILES, _figure, _no_data
from ..reporting.format import fmt_ms
from .metrics import BY_KEY, TOTAL
from .trend import GroupTrend, Series, SeriesChange

REGRESSED, WORSE, BETTER = "#d62728", "#ff7f0e", "#2ca02c"
LEVEL = "#7f7f7f"
PANEL_IN = 2.3  # height of one panel of the whole-run chart
ROW_IN = 1.15  # height of one request's row of small panels
MAX_REQUEST_ROWS = 30
REQUEST_METRICS = ("p95", "error_rate", "rps")
COLOURS = {column.removesuffix("_ms"): colour for column, _, colour in PERCENTILES}  # p50/p95/p99 as in every chart


def change_colour(change: SeriesChange) -> str:
    return REGRESSED if change.regressed else WORSE if change.worse else BETTER


def _run_axis(ax, trend: GroupTrend, with_labels: bool, max_ticks: int = 12) -> None:
    runs = trend.group.runs
    n = len(runs)
    step = max(1, int(np.ceil(n / max_ticks)))
    ticks = list(range(0, n, step))
    if n - 1 not in ticks:
        ticks[-1] = n - 1  # the latest run always has its tick
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{i + 1}\n{runs[i].date[5:]}" if with_labels else "" for i in ticks], fontsize=7)
    ax.set_xlim(-0.6, n - 0.4)
    ax.grid(True, alpha=0.25)


def _levels(series: Series) -> list[tuple[int, int, float]]:
    """(first position, last position, median) of each stretch between change points."""
    raw = np.asarray(series.values)
    cuts = [0, *(series.positions.index(c.position) for c in series.changes), len(raw)]
    return [(series.positions[a], series.positions[b - 1], float(np.median(raw[a:b])))
            for a, b in zip(cuts, cuts[1:]) if b > a]


def _draw(ax, series: Series, colour: str, label: str | None = None, levels: bool = True) -> None:
    ax.plot(series.positions, series.values, color=colour, marker="o", markersize=3, linewidth=1.0, label=label)
    if levels:
        for first, last, median in _levels(series):
            ax.hlines(median, first - 0.4, last + 0.4, color=LEVEL, linewidth=2.2, alpha=0.6, zorder=1)
    for change in series.changes:
        ax.axvline(change.position - 0.5, color=change_colour(change), linestyle="--", linewidth=1.4)
        if levels:
            pct = change.change_pct
            text = f"{pct:+.0f}%" if pct is not None else f"{change.after - change.before:+g}"
            ax.annotate(text, (change.position - 0.5, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -10), textcoords="offset points", fontsize=8, color=change_colour(change))


LEAST_TOP = {"%": 1.0, "count": 1.0}  # an all-zero error rate or violation count is drawn on a readable scale


def _unit_axis(ax, unit: str) -> None:
    ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1] * 1.12, LEAST_TOP.get(unit, 1e-9)))
    if unit == "ms":
        ax.yaxis.set_major_formatter(lambda v, _pos: fmt_ms(v))


def _legend(fig: Figure) -> None:
    handles = [Line2D([], [], color=LEVEL, linewidth=2.2, alpha=0.6, label="median between change points"),
               Line2D([], [], color=REGRESSED, linestyle="--", label="change: regressed beyond tolerance"),
               Line2D([], [], color=WORSE, linestyle="--", label="change: worse, within tolerance"),
               Line2D([], [], color=BETTER, linestyle="--", label="change: better")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)


def total_figure(trend: GroupTrend) -> Figure:
    """The whole run over the runs: latency percentiles, error rate, throughput, consistency and capacity."""
    mine = {s.metric.key: s for s in trend.series if s.key == TOTAL}
    panels = [("latency", [k for k in ("p50", "p95", "p99") if k in mine])]
    panels += [(key, [key]) for key in ("error_rate", "rps", "violations", "capacity_rps", "capacity_users")
               if key in mine]
    panels = [(name, keys) for name, keys in panels if keys]
    fig = _figure(height=1.4 + PANEL_IN * max(1, len(panels)), width=11)
    group = trend.group
    fig.suptitle(f"Run history, group {group.number}: {len(group.runs)} runs "
                 f"({group.runs[0].date} to {group.runs[-1].date})\n" + "\n".join(textwrap.wrap(group.description, 150)),
                 fontsize=10)
    if not panels:
        _no_data(fig.add_subplot(), "No run with enough requests")
        return fig
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, keys) in zip(axes, panels):
        for key in keys:
            metric = BY_KEY[key]
            colour = COLOURS.get(key, "#1f77b4")
            _draw(ax, mine[key], colour, label=metric.label if name == "latency" else None, levels=key != "p50")
        unit = BY_KEY[keys[0]].unit
        ax.set_ylabel(f"{'latency' if name == 'latency' else BY_KEY[keys[0]].label} ({unit})", fontsize=9)
        _unit_axis(ax, unit)
        if name == "latency":
            ax.legend(loc="upper left", fontsize=8, ncols=3, frameon=False)
        _run_axis(ax, trend, with_labels=ax is axes[-1])
    axes[-1].set_xlabel("run (number in the group, month-day)")
    _legend(fig)
    return fig


def requests_figure(trend: GroupTrend) -> Figure:
    """Small panels per request name (p95, error rate, throughput), change points marked."""
    by_request: dict[tuple[str, str], dict[str, Series]] = {}
    for series in trend.series:
        if series.key != TOTAL and series.metric.key in REQUEST_METRICS:
            by_request.setdefault(series.key, {})[series.metric.key] = series
    keys = list(by_request)[:MAX_REQUEST_ROWS]
    more = len(by_request) - len(keys)
    fig = _figure(height=1.3 + ROW_IN * max(1, len(keys)), width=12)
    fig.suptitle(f"Per request, group {trend.group.number}: p95, error rate and throughput over "
                 f"{len(trend.group.runs)} runs" + (f" (first {len(keys)} of {len(by_request)} requests)" if more else ""),
                 fontsize=10)
    if not keys:
        _no_data(fig.add_subplot(), "No request with enough requests in any run")
        return fig
    axes = fig.subplots(len(keys), len(REQUEST_METRICS), sharex=True, squeeze=False)
    for row, key in enumerate(keys):
        for col, metric_key in enumerate(REQUEST_METRICS):
            ax = axes[row, col]
            series = by_request[key].get(metric_key)
            if series is None:
                ax.set_yticks([])
            else:
                _draw(ax, series, COLOURS.get(metric_key, "#1f77b4"), levels=True)
                _unit_axis(ax, series.metric.unit)
            ax.tick_params(axis="y", labelsize=7)
            if row == 0:
                metric = BY_KEY[metric_key]
                ax.set_title(f"{metric.label} ({metric.unit})", fontsize=9)
            if col == 0:
                label = next(iter(by_request[key].values())).label
                ax.set_ylabel(label if len(label) <= 24 else label[:23] + "…", fontsize=8, rotation=0,
                              ha="right", va="center")
            _run_axis(ax, trend, with_labels=row == len(keys) - 1, max_ticks=6)
    _legend(fig)
    return fig
