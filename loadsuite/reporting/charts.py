"""The PNG charts of analyze_results.py; each function returns a matplotlib Figure (no pyplot, no display)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, MultipleLocator, NullLocator  # noqa: E402

from .format import SMALL_SAMPLE, fmt_ms, fmt_sample  # noqa: E402

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 5.0, 100
ROW_IN = 0.42  # height per bar row, so long request lists stay legible
PERCENTILES = (("p50_ms", "p50", "#2ca02c"), ("p95_ms", "p95", "#ff7f0e"), ("p99_ms", "p99", "#d62728"))
MAX_FAILURE_ROWS = 20
NOT_CALLED_COLOUR = "#888888"


def _figure(height: float = HEIGHT_IN, width: float = WIDTH_IN) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: Path) -> None:
    """Write the PNG with every text drawn as written: a request name or failure reason with two `$` in it is
    text, not mathtext (an unbalanced one would stop the analysis with a parse error)."""
    with matplotlib.rc_context({"text.parse_math": False}):  # the tick labels made while drawing
        for text in fig.findobj(Text):
            text.set_parse_math(False)
        fig.savefig(path, dpi=DPI, facecolor="white")


def _bin_note(bin_s: int) -> str:
    return "" if bin_s <= 1 else f", {_seconds(bin_s)} averages"


def _seconds(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min" if seconds % 60 == 0 \
        else f"{seconds} s"


TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _elapsed(index: pd.DatetimeIndex, start: pd.Timestamp) -> np.ndarray:
    return ((index - start) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)


def _clock(seconds: float, with_hours: bool) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}" if with_hours else f"{minutes}:{secs:02d}"


def _elapsed_axis(ax, start: pd.Timestamp, span_s: float) -> None:
    """Elapsed run time on x (m:ss or h:mm:ss): easier to read at a glance than wall-clock ticks."""
    step = next((s for s in TICK_STEPS_S if span_s / s <= 10), TICK_STEPS_S[-1])
    with_hours = span_s >= 3600 and step % 60 == 0
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _clock(x, with_hours)))
    span_s = max(span_s, 1.0)
    ax.set_xlim(-0.01 * span_s, 1.01 * span_s)  # a little air so end markers are not clipped
    unit = "h:mm" if with_hours else "m:ss"
    ax.set_xlabel(f"Elapsed time ({unit}) since {start:%Y-%m-%d %H:%M:%S} UTC")
    ax.grid(True, alpha=0.3)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


LIMIT_STYLE = {"p95_ms": ("#ff7f0e", "p95 limit"), "p99_ms": ("#d62728", "p99 limit")}
LIMIT_HEADROOM = 3.0  # a limit more than 3x above the highest line is named, not drawn (it would flatten the data)


def total_latency_limits(summary: dict | None) -> dict[str, float]:
    """The whole-run p95/p99 limits the verdict judged, from summary.json's thresholds."""
    limits = {}
    for row in (summary or {}).get("thresholds") or []:
        if isinstance(row, dict) and row.get("scope") == "total" and row.get("metric") in LIMIT_STYLE \
                and isinstance(row.get("limit"), (int, float)):
            limits[row["metric"]] = float(row["limit"])
    return limits


def _limit_lines(ax, limits: dict[str, float], data_top: float, vertical: bool = False) -> float:
    """Dashed threshold lines within reach of the data; the others named in a corner. Returns the new data top."""
    from .format import fmt_ms
    top = data_top
    far = []
    for metric, limit in sorted(limits.items()):
        colour, label = LIMIT_STYLE[metric]
        if limit <= data_top * LIMIT_HEADROOM:
            line = ax.axvline if vertical else ax.axhline
            line(limit, color=colour, linestyle="--", linewidth=1.2, label=f"{label} {fmt_ms(limit)} ms")
            top = max(top, limit)
        else:
            far.append(f"{label} {fmt_ms(limit)} ms")
    if far:
        where = (0.01, 0.90, "left", "beyond") if vertical else (0.99, 0.97, "right", "above")
        ax.text(where[0], where[1], f"{where[3]} the chart: " + ", ".join(far), transform=ax.transAxes,
                ha=where[2], va="top", fontsize=9, color="#555555")
    return top


def response_times_figure(timeline: pd.DataFrame, bin_s: int = 1, limits: dict[str, float] | None = None) -> Figure:
    """p50/p95/p99 over time (Locust's 10 s sliding window), the p95/p99 limits, the user count on a second axis."""
    fig = _figure()
    ax = fig.add_subplot()
    users_ax = ax.twinx()
    ax.set_title(f"Response time percentiles over time (10 s sliding window{_bin_note(bin_s)})")
    points = timeline.dropna(subset=["p50_ms", "p95_ms", "p99_ms"], how="all")
    if points.empty:
        _no_data(ax, "No response-time history (run shorter than a few seconds)")
        users_ax.set_yticks([])
        return fig
    start = timeline.index[0]
    x = _elapsed(timeline.index, start)
    users_ax.fill_between(x, timeline["users"].to_numpy(dtype=float), step="post",
                          color="#1f77b4", alpha=0.12, label="Users")
    users_ax.set_ylabel("Users")
    users_ax.set_ylim(0, max(1.0, float(timeline["users"].max())) * 1.15)
    # The percentile lines are the point of the chart: draw them over the users band.
    ax.set_zorder(users_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    for column, label, colour in PERCENTILES:
        ax.plot(x, timeline[column], label=label, color=colour, linewidth=1.6,
                marker="o" if len(points) < 30 else None, markersize=3)
    ax.set_ylabel("Response time (ms)")
    top = _limit_lines(ax, limits or {}, float(np.nanmax(points[["p50_ms", "p95_ms", "p99_ms"]].to_numpy())))
    ax.set_ylim(bottom=0, top=top * 1.15 or 1)
    _elapsed_axis(ax, start, x[-1])
    handles = ax.get_legend_handles_labels()[0] + users_ax.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles), frameon=False)
    return fig


def throughput_figure(timeline: pd.DataFrame, bin_s: int = 1) -> Figure:
    """Requests/s and failures/s over time, exact per bin (from Locust's cumulative counters)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title(f"Throughput over time ({_seconds(bin_s)} averages)" if bin_s > 1 else "Throughput over time")
    points = timeline.dropna(subset=["rps"])
    if points.empty:
        _no_data(ax, "No throughput history (run shorter than a few seconds)")
        return fig
    start = timeline.index[0]
    x = _elapsed(points.index, start)
    users_ax = ax.twinx()
    all_x = _elapsed(timeline.index, start)
    users_ax.fill_between(all_x, timeline["users"].to_numpy(dtype=float), step="post", color="#7f7f7f", alpha=0.15,
                          label="Users")
    users_ax.set_ylabel("Users")
    users_ax.set_ylim(0, max(1.0, float(timeline["users"].max())) * 1.15)
    ax.set_zorder(users_ax.get_zorder() + 1)  # the rates over the users band
    ax.patch.set_visible(False)
    marker = "o" if len(points) < 30 else None
    ax.plot(x, points["rps"], color="#1f77b4", linewidth=1.6, marker=marker, markersize=3,
            label="Requests/s")
    ax.plot(x, points["fps"], color="#d62728", linewidth=1.6, marker=marker, markersize=3,
            label="Failures/s")
    ax.fill_between(x, points["fps"].to_numpy(dtype=float), color="#d62728", alpha=0.15)
    ax.set_ylabel("Requests per second")
    ax.set_ylim(bottom=0, top=max(1.0, float(points["rps"].max())) * 1.15)
    _elapsed_axis(ax, start, _elapsed(timeline.index[-1:], start)[0])
    handles = ax.get_legend_handles_labels()[0] + users_ax.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles), frameon=False)
    return fig


def endpoint_percentiles_figure(endpoints: pd.DataFrame) -> Figure:
    """Horizontal p50/p95/p99 bars per request name, slowest p95 at the top; uncalled names marked."""
    rows = endpoints.assign(_order=endpoints["p95_ms"].fillna(-1)).sort_values(["_order", "name"],
                                                                              ascending=[True, False])
    counts = rows["name"].value_counts()
    labels = [f"{m} {n}" if counts[n] > 1 and m else n for m, n in zip(rows["method"], rows["name"])]
    called = (rows["requests"] > 0).to_numpy()
    labels = [f"{label}  (n={int(n):,})" if ok else f"{label} (not called)"
              for label, ok, n in zip(labels, called, rows["requests"])]
    fig = _figure(height=max(HEIGHT_IN, 1.6 + ROW_IN * len(rows)))
    ax = fig.add_subplot()
    ax.set_title("Response time percentiles per request (whole run)\n"
                 f"n = requests; * fewer than {SMALL_SAMPLE} requests: rough", fontsize=11)
    if rows.empty:
        _no_data(ax, "No requests")
        return fig
    y = np.arange(len(rows))
    height = 0.26
    for offset, (column, label, colour) in zip((-height, 0.0, height), PERCENTILES):
        values = rows[column].fillna(0).to_numpy(dtype=float)
        ax.barh(y - offset, values, height=height, color=colour, label=label)
    top = float(np.nanmax(rows["p99_ms"].to_numpy(dtype=float))) if called.any() else 1.0
    for yi, value, ok, n in zip(y, rows["p99_ms"].to_numpy(dtype=float), called, rows["requests"]):
        if ok:
            ax.text(value + top * 0.01, yi - height, fmt_sample(n, fmt_ms(value)), va="center", fontsize=8,
                    color="#444444")
    ax.set_yticks(y, labels)
    for tick, ok in zip(ax.get_yticklabels(), called):
        if not ok:
            tick.set_color(NOT_CALLED_COLOUR)
            tick.set_fontstyle("italic")
    ax.set_xlim(0, (top or 1.0) * 1.12)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("Response time (ms)")
    ax.grid(True, axis="x", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper right", ncols=3, frameon=False)
    return fig


CDF_POINTS = ((0.50, "cdf_50%"), (0.66, "cdf_66%"), (0.75, "cdf_75%"), (0.80, "cdf_80%"), (0.90, "cdf_90%"),
              (0.95, "p95_ms"), (0.98, "cdf_98%"), (0.99, "p99_ms"), (0.999, "cdf_99.9%"), (0.9999, "cdf_99.99%"))
MAX_CDF_LINES = 10


def cdf_points(row) -> tuple[np.ndarray, np.ndarray]:
    """One request's latency distribution from Locust's percentiles: (ms, share of requests at or below), from
    the minimum (0) to the maximum (1), made monotone like every other percentile output."""
    pairs = [(0.0, row.get("min_ms"))]
    pairs += [(q, row.get(column)) for q, column in CDF_POINTS if column in row]
    pairs.append((1.0, row.get("max_ms")))
    shares, values, floor = [], [], 0.0
    for share, value in pairs:
        if value is None or pd.isna(value):
            continue
        floor = max(floor, float(value))
        shares.append(share)
        values.append(floor)
    return np.array(values), np.array(shares)


def latency_distribution_figure(endpoints: pd.DataFrame, limits: dict[str, float] | None = None) -> Figure:
    """Cumulative latency distribution per request (the busiest MAX_CDF_LINES), log-scaled ms, with the limits."""
    fig = _figure(height=5.5)
    ax = fig.add_subplot()
    called = endpoints[endpoints["requests"] > 0].sort_values("requests", ascending=False)
    shown = called.head(MAX_CDF_LINES)
    more = len(called) - len(shown)
    ax.set_title("Latency distribution per request (share of requests at or below, from Locust's percentiles)\n"
                 + (f"busiest {len(shown)} of {len(called)} requests; " if more else "")
                 + f"n = requests, * fewer than {SMALL_SAMPLE}: rough", fontsize=11)
    if shown.empty:
        _no_data(ax, "No requests")
        return fig
    colours = matplotlib.colormaps["tab10"].colors
    counts = endpoints["name"].value_counts()
    lowest = np.inf
    for index, row in enumerate(shown.to_dict("records")):
        values, shares = cdf_points(row)
        if len(values) < 2:
            continue
        lowest = min(lowest, values[values > 0].min() if (values > 0).any() else 0.01)
        label = f"{row['method']} {row['name']}" if counts[row["name"]] > 1 and row["method"] else row["name"]
        ax.step(np.maximum(values, 0.01), shares * 100, where="post", color=colours[index % 10], linewidth=1.5,
                label=fmt_sample(row["requests"], f"{label} (n={int(row['requests']):,})"))
    highest = _limit_lines(ax, limits or {}, float(shown["max_ms"].max()), vertical=True)
    ax.set_xscale("log")
    ax.set_xlim(max(0.01, (lowest if np.isfinite(lowest) else 0.01) / 1.5), highest * 1.5)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt_ms(x)))
    ax.set_xlabel("Response time (ms, log scale)")
    ax.set_ylabel("Requests at or below (%)")
    ax.set_ylim(0, 101)
    for share in (50, 95, 99):
        ax.axhline(share, color="#bbbbbb", linewidth=0.8, zorder=0)
        ax.text(1.005, share, f"p{share}", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                color="#777777")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.9)
    return fig


def short_reason(error: str, limit: int = 70) -> str:
    """A failure reason without Locust's exception wrapper: CatchResponseError('x') -> x."""
    text = str(error).strip()
    for wrapper in ("CatchResponseError(", "HTTPError("):
        if text.startswith(wrapper) and text.endswith(")"):
            text = text[len(wrapper):-1].strip()
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                text = text[1:-1]
    if text.startswith("LocustBadStatusCode(code=") and text.endswith(")"):
        text = f"HTTP {text[len('LocustBadStatusCode(code='):-1]} (unexpected status)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure_rows(failures: pd.DataFrame) -> pd.DataFrame:
    rows = failures.assign(reason=[short_reason(e, 70) for e in failures["error"]])
    rows = rows.groupby(["method", "name", "reason"], as_index=False, sort=False)["occurrences"].sum()
    rows = rows.sort_values("occurrences", ascending=False, ignore_index=True)
    if len(rows) > MAX_FAILURE_ROWS:
        rest = rows.iloc[MAX_FAILURE_ROWS - 1:]
        other = pd.DataFrame([{"method": "", "name": f"{len(rest)} other kinds", "reason": "(see stats_failures.csv)",
                               "occurrences": int(rest["occurrences"].sum())}])
        rows = pd.concat([rows.iloc[: MAX_FAILURE_ROWS - 1], other], ignore_index=True)
    return rows


def failures_figure(failures: pd.DataFrame | None) -> Figure:
    """One bar per (request name, failure reason), most frequent at the top; a clear panel when there are none."""
    failures = failures if failures is not None else pd.DataFrame(columns=["method", "name", "error", "occurrences"])
    rows = _failure_rows(failures) if not failures.empty else failures
    fig = _figure(height=max(HEIGHT_IN, 1.6 + 0.55 * len(rows)))
    ax = fig.add_subplot()
    if rows.empty:
        ax.set_title("Failures by request and reason")
        _no_data(ax, "No failures in this run")
        for spine in ax.spines.values():
            spine.set_visible(False)
        return fig
    total = int(rows["occurrences"].sum())
    ax.set_title(f"Failures by request and reason ({total} in total)")
    y = np.arange(len(rows))[::-1]
    values = rows["occurrences"].to_numpy(dtype=float)
    other = (rows["method"] == "") & rows["name"].str.endswith(" other kinds")
    ax.barh(y, values, height=0.6, color=np.where(other.to_numpy(), "#999999", "#d62728"))
    labels = [f"{n}\n{r}" for n, r in zip(rows["name"], rows["reason"])]
    ax.set_yticks(y, labels, fontsize=8)
    for yi, value in zip(y, values):
        ax.text(value + values.max() * 0.01, yi, f"{value:.0f}", va="center", fontsize=8, color="#444444")
    ax.set_xlim(0, values.max() * 1.12)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 failures
    ax.set_xlabel("Failures (count)")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def compare_figure(comparison, metric_defs) -> Figure:
    """Left: p95 baseline vs current per request; right: a verdict grid of every metric's change (metric_defs:
    (key, column, label, unit) tuples)."""

    labels = list(comparison.labels)
    n = len(labels)
    fig = _figure(height=max(HEIGHT_IN, 1.8 + ROW_IN * n), width=13)
    bars_ax, grid_ax = fig.subplots(1, 2, width_ratios=(3, 2), sharey=True)
    y = np.arange(n)[::-1]
    known = getattr(comparison, "p95", {}) or {}
    skipped = getattr(comparison, "skipped", {}) or {}
    base = np.array([known.get(label, (_value(comparison, label, "p95", "baseline"),))[0] for label in labels])
    cur = np.array([known[label][1] if label in known else _value(comparison, label, "p95", "current")
                    for label in labels])
    height = 0.38
    bars_ax.barh(y + height / 2, np.nan_to_num(base), height=height, color="#9ecae1", label="Baseline")
    colours = ["#d62728" if (v := comparison.verdicts.get((label, "p95"))) and v.regressed else "#3182bd"
               for label in labels]
    bars_ax.barh(y - height / 2, np.nan_to_num(cur), height=height, color=colours, label="Current")
    for yi, label in zip(y, labels):  # a row too small to judge: its bars are shown, hatched, and named so
        if label in skipped:
            for offset in (height / 2, -height / 2):
                bars_ax.barh(yi + offset, np.nan_to_num(base if offset > 0 else cur)[labels.index(label)],
                             height=height, color="none", edgecolor="#ffffff", hatch="///", linewidth=0)
    bars_ax.set_yticks(y, [f"{label} (not judged)" if label in skipped else label for label in labels])
    bars_ax.set_xlim(left=0)
    bars_ax.set_xlabel("p95 response time (ms)")
    bars_ax.set_title("p95 per request: baseline vs current")
    bars_ax.grid(True, axis="x", alpha=0.3)
    # Above the panels, so it can never hide a bar.
    fig.legend(handles=[Patch(color="#9ecae1", label="Baseline"), Patch(color="#3182bd", label="Current"),
                        Patch(color="#d62728", label="Current, p95 regressed")], loc="outside upper left", ncols=3,
               fontsize=9, frameon=False)

    metrics = [(key, label) for key, _, label, _ in metric_defs]
    codes = np.zeros((n, len(metrics)))  # 0 n/a, 1 within tolerance, 2 improved, 3 regressed
    for row, label in enumerate(labels):
        for col, (key, _) in enumerate(metrics):
            v = comparison.verdicts.get((label, key))
            codes[row, col] = 0 if v is None else 3 if v.regressed else 2 if v.improved else 1
            text = "few" if v is None and label in skipped else "-" if v is None \
                else f"{v.current - v.baseline:+.1f} pt" if key == "failure_rate" \
                else "±0%" if v.change_pct is None and not v.current else "new" if v.change_pct is None \
                else f"{v.change_pct:+.0f}%"
            grid_ax.text(col, y[row], text, ha="center", va="center", fontsize=8,
                         color="white" if codes[row, col] in (2, 3) else "#222222")
    cmap = ListedColormap(["#f0f0f0", "#d9d9d9", "#31a354", "#d62728"])
    grid_ax.imshow(codes[::-1], cmap=cmap, vmin=0, vmax=3, aspect="auto", origin="lower",
                   extent=(-0.5, len(metrics) - 0.5, -0.5, n - 0.5))
    grid_ax.set_xticks(range(len(metrics)), [label for _, label in metrics])
    grid_ax.set_xticks(np.arange(len(metrics) + 1) - 0.5, minor=True)
    grid_ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    grid_ax.grid(which="minor", color="white", linewidth=2)
    grid_ax.tick_params(which="minor", length=0)
    bars_ax.tick_params(which="minor", left=False)
    grid_ax.xaxis.set_ticks_position("top")
    grid_ax.tick_params(axis="y", left=False)
    regressions = len(comparison.regressions)
    nothing = not comparison.verdicts
    grid_ax.set_title(f"Change vs baseline: {regressions} regression(s)" if regressions
                      else "Nothing judged: too few samples" if nothing
                      else "Change vs baseline: no regression",
                      color="#d62728" if regressions else "#555555" if nothing else "#31a354")
    grid_ax.legend(handles=[Patch(color="#d62728", label="regressed"), Patch(color="#31a354", label="improved"),
                            Patch(color="#d9d9d9", label="within tolerance"),
                            Patch(color="#f0f0f0", label="few = too few requests to judge")],
                   loc="upper center", bbox_to_anchor=(0.5, -0.02), ncols=2, fontsize=8, frameon=False)
    return fig


def _value(comparison, label: str, metric: str, side: str) -> float:
    v = comparison.verdicts.get((label, metric))
    return float("nan") if v is None else getattr(v, side)
