"""The trend report of a run history: history.md (tables, charts, a Mermaid chart), history.json and the console.

Exit code: 1 when the latest run regressed (trend.py says when), else 0; history.md says the same first.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..reporting import charts as result_charts
from ..reporting.compare import tolerance_text
from ..reporting.format import fmt_ms, fmt_num, fmt_points
from ..reporting.markdown import FAIL, PASS, UNKNOWN
from ..reporting.tables import md_escape, md_table, text_table
from . import charts
from .metrics import METRICS, TOTAL, Metric
from .trend import GroupTrend, Series, SeriesChange, Trend

HISTORY_MD, HISTORY_JSON = "history.md", "history.json"
MAX_CHARTED_GROUPS = 5  # groups beyond these get tables only
MAX_TABLE_RUNS = 60  # rows of the per-run table (the newest); history.json has them all
MAX_LISTED = 20  # runs listed as not used


def fmt_value(metric: Metric, value: float) -> str:
    if metric.unit == "ms":
        return f"{fmt_ms(value)} ms"
    if metric.unit == "%":
        return fmt_points(value)
    if metric.unit == "req/s":
        return f"{fmt_num(value)} req/s"
    return f"{value:g}" if metric.unit == "count" else f"{value:g} {metric.unit}"


def chart_files(trend: GroupTrend) -> list[tuple[str, str]]:
    number = trend.group.number
    return [(f"history_g{number}_total.png", f"Group {number}: the whole run over the runs"),
            (f"history_g{number}_requests.png", f"Group {number}: each request over the runs")]


def change_text(series: Series, change: SeriesChange, runs: int) -> str:
    pct = change.change_pct
    moved = f" ({pct:+.1f}%)" if pct is not None and series.metric.unit != "%" else \
        f" ({change.after - change.before:+.2f} points)" if series.metric.unit == "%" else ""
    return (f"{series.metric.label} of {series.label}: {fmt_value(series.metric, change.before)} -> "
            f"{fmt_value(series.metric, change.after)}{moved} since run {change.position + 1} of {runs} "
            f"({change.run_id}), p={change.p_value:.2g}")


def judgement(change: SeriesChange) -> str:
    """What a change means; only a change the latest run is on can be a regression of the latest run."""
    if change.regressed:
        return "REGRESSED (the latest run)" if change.current else "worse beyond tolerance"
    return ("improved" if change.improved else "worse, within tolerance" if change.worse
            else "better, within tolerance")


def _mark(change: SeriesChange) -> str:
    return (f"{FAIL} " if change.regressed and change.current else f"{UNKNOWN} " if change.regressed
            else f"{PASS} " if change.improved else "")


def settings_text(trend: Trend) -> str:
    s = trend.settings
    return (f"change points: ruptures PELT, each kept at p <= {s.alpha:g} (Mann-Whitney; a t-test when the two sides do not overlap) with at least "
            f"{s.min_segment} runs on each side; the latest run is judged on changes that started within its "
            f"last {s.recent} runs; tolerances: {tolerance_text(s.tolerances)}; any rise of oracle violations")


def verdict_lines(trend: Trend) -> list[str]:
    judged = trend.judged
    latest = trend.history.latest
    if not judged.judgeable:
        return [f"not judged: the latest run ({latest.run_id}) has {len(judged.group.runs)} comparable run(s) in its "
                f"group; a change needs at least {2 * trend.settings.min_segment}"]
    runs = len(judged.group.runs)
    watches = [f"watch: {s.metric.label} of {s.label}: the latest run's {fmt_value(s.metric, s.watch.latest)} is "
               f"beyond every one of the {s.watch.runs} runs of its level (median {fmt_value(s.metric, s.watch.level)}):"
               f" a change may start here; the next run confirms it or not" for s in judged.watches]
    if trend.regressions:
        return [f"REGRESSION: {change_text(s, c, runs)}" for s, c in trend.regressions] + watches
    earlier = sorted((c.position, c.run_id) for _, c in judged.changes if c.regressed and not c.current)
    if not earlier:
        return [f"no regression: the latest run ({latest.run_id}) is on the level of its {runs} comparable runs",
                *watches]
    position, run_id = earlier[0]
    return [f"no regression in the last {trend.settings.recent} runs: the latest run ({latest.run_id}) is on the "
            f"level of the runs before it, but {len(earlier)} change(s) worse beyond tolerance started earlier "
            f"(the first at run {position + 1} of {runs}, {run_id}; the change points below)", *watches]


def _change_rows(trend: GroupTrend, marks: bool) -> list[list[str]]:
    runs = trend.group.runs
    rows = []
    for series, change in trend.changes:
        pct = change.change_pct
        moved = f"{change.after - change.before:+.2f} pt" if series.metric.unit == "%" else \
            f"{pct:+.1f}%" if pct is not None else "new"
        rows.append([series.label, series.metric.label, f"{change.position + 1} ({runs[change.position].date})",
                     change.run_id, fmt_value(series.metric, change.before), fmt_value(series.metric, change.after),
                     (f"{_mark(change)}{moved}" if marks else moved), f"{change.p_value:.2g}",
                     judgement(change)])
    return rows


CHANGE_HEADERS = ["Request", "Metric", "Starts at run", "Run id", "Before (median)", "After (median)", "Change",
                  "p", "Judgement"]


def _run_table(trend: GroupTrend) -> tuple[list[str], list[list[str]]]:
    """One row per run (the newest MAX_TABLE_RUNS): the whole run's metrics, a mark where a change starts."""
    total = {s.metric.key: s for s in trend.series if s.key == TOTAL}
    shown = [m for m in METRICS if m.key in total]
    starts = {(s.metric.key, c.position): c for s in total.values() for c in s.changes}
    headers = ["Run", "Date", "Run id", *(f"{m.label} ({m.unit})" for m in shown)]
    rows = []
    runs = trend.group.runs
    for position in range(max(0, len(runs) - MAX_TABLE_RUNS), len(runs)):
        run = runs[position]
        cells = []
        for metric in shown:
            value = run.values.get(TOTAL, {}).get(metric.key)
            mark = starts.get((metric.key, position))
            text = "-" if value is None else fmt_value(metric, value).removesuffix(f" {metric.unit}")
            cells.append(text + (f" ◆{FAIL}" if mark and mark.regressed else " ◆" if mark else ""))
        rows.append([str(position + 1), run.date, run.run_id, *cells])
    return headers, rows


def mermaid_text(text: str) -> str:
    """Text inside a Mermaid chart: only plain characters (quotes or brackets would end its strings)."""
    return re.sub(r"[^A-Za-z0-9 .,:;()/%+_-]", "", str(text))[:80]


def mermaid_chart(series: Series) -> str:
    """A Mermaid xychart (GitHub renders it in job summaries and Markdown files): bars per run, line per level."""
    levels = []
    cuts = [0, *(series.positions.index(c.position) for c in series.changes), len(series.values)]
    for a, b in zip(cuts, cuts[1:]):
        stretch = sorted(series.values[a:b])
        middle = len(stretch) // 2
        median = stretch[middle] if len(stretch) % 2 else (stretch[middle - 1] + stretch[middle]) / 2
        levels += [median] * (b - a)
    numbers = lambda values: ", ".join(f"{v:.4g}" for v in values)  # noqa: E731
    title = mermaid_text(f"{series.label} {series.metric.label} ({series.metric.unit}) per run; "
                         "line: median between change points")
    return "\n".join(["```mermaid", "xychart-beta", f'    title "{title}"',
                      "    x-axis [" + ", ".join(f'"{p + 1}"' for p in series.positions) + "]",
                      f'    y-axis "{mermaid_text(series.metric.unit)}"',
                      f"    bar [{numbers(series.values)}]", f"    line [{numbers(levels)}]", "```"])


def group_markdown(trend: GroupTrend, judged: bool, with_charts: bool) -> list[str]:
    group = trend.group
    lines = [f"## Group {group.number}{' (the latest run)' if judged else ''}: {len(group.runs)} runs, "
             f"{md_escape(group.runs[0].date)} to {md_escape(group.runs[-1].date)}", "",
             f"Runs like this: {md_escape(group.description)}.", ""]
    if with_charts:
        lines += [f"![{title}]({name})" for name, title in chart_files(trend)] + [""]
    p95 = next((s for s in trend.series if s.key == TOTAL and s.metric.key == "p95"), None)
    if judged and p95 is not None and len(p95.values) >= 2:
        lines += [mermaid_chart(p95), ""]
    if not trend.judgeable:
        lines += [f"{UNKNOWN} Too few runs for change points (a change needs at least "
                  f"{2 * trend.settings.min_segment}).", ""]
    elif trend.changes:
        lines += [f"**{len(trend.changes)} change point(s)** ({FAIL} the latest run regressed, {UNKNOWN} worse "
                  f"beyond tolerance earlier, {PASS} improved beyond it):", "", md_table(CHANGE_HEADERS, _change_rows(trend, marks=True), left=4, text_columns=(-1,)), ""]
    else:
        lines += [f"{PASS} No change point in any metric of any request.", ""]
    headers, rows = _run_table(trend)
    if len(group.runs) > MAX_TABLE_RUNS:
        lines.append(f"The newest {MAX_TABLE_RUNS} of {len(group.runs)} runs (history.json has every run):")
    lines += ["The whole run per run (◆ a change point starts here):", "", md_table(headers, rows, left=3), ""]
    return lines


def markdown(trend: Trend) -> str:
    history = trend.history
    runs = sum(len(g.group.runs) for g in trend.groups)
    lines = [f"# Run history: {runs} runs in {len(trend.groups)} comparable group(s)", ""]
    marks = {"REGRESSION": FAIL, "no regression": PASS}
    lines += [f"- {marks.get(line.split(':')[0], UNKNOWN)} **{md_escape(line)}**" for line in verdict_lines(trend)] + [""]
    lines += [f"How: {md_escape(settings_text(trend))}.", ""]
    if len(trend.groups) > 1:
        lines += [f"{UNKNOWN} Runs that differ in users, shape, host, client, user classes, suite version or "
                  "duration are kept in separate groups; only the latest run's group is judged.", ""]
    for index, group in enumerate(trend.groups):
        lines += group_markdown(group, judged=index == 0, with_charts=index < MAX_CHARTED_GROUPS)
    if history.not_used:
        listed = "; ".join(f"{md_escape(name)}: {md_escape(why)}" for name, why in history.not_used[:MAX_LISTED])
        more = f" and {len(history.not_used) - MAX_LISTED} more" if len(history.not_used) > MAX_LISTED else ""
        lines += [f"Not used ({len(history.not_used)}): {listed}{more}.", ""]
    notes = [f"{run.run_id}: {note}" for g in trend.groups for run in g.group.runs for note in run.notes]
    if notes:
        lines += ["Notes: " + "; ".join(md_escape(n) for n in notes[:MAX_LISTED]) + ".", ""]
    if history.older_than_read:
        lines += [f"{history.older_than_read} older runs were not read.", ""]
    return "\n".join(lines)


def text(trend: Trend, out: Path) -> str:
    lines = [f"History: {sum(len(g.group.runs) for g in trend.groups)} runs under {trend.history.root} in "
             f"{len(trend.groups)} comparable group(s); {len(trend.history.not_used)} not used"]
    for group in trend.groups:
        lines.append(f"group {group.group.number}: {len(group.group.runs)} runs ({group.group.description})")
        if group.changes:
            lines += ["", text_table(CHANGE_HEADERS, _change_rows(group, marks=False), text_columns=(0, 1, 2, 3, -1)), ""]
    lines.append(f"How: {settings_text(trend)}")
    lines += verdict_lines(trend)
    lines.append(f"Wrote {out / HISTORY_MD}, {out / HISTORY_JSON} and the charts to {out}")
    return "\n".join(lines)


def as_json(trend: Trend) -> dict:
    def change(series: Series, c: SeriesChange) -> dict:
        return {"request": series.label, "method": series.key[0], "name": series.key[1], "metric": series.metric.key,
                "run": c.position + 1, "run_id": c.run_id, "before": c.before, "after": c.after,
                "change_pct": c.change_pct, "p_value": c.p_value, "judgement": judgement(c), "latest": c.current}
    return {
        "regression": bool(trend.regressions),
        "verdict": verdict_lines(trend),
        "latest_run": trend.history.latest.run_id,
        "regressions": [change(s, c) for s, c in trend.regressions],
        "groups": [{"number": g.group.number, "description": g.group.description,
                    "runs": [run.run_id for run in g.group.runs], "changes": [change(s, c) for s, c in g.changes]}
                   for g in trend.groups],
        "not_used": [{"folder": name, "why": why} for name, why in trend.history.not_used],
    }


def write_report(trend: Trend, out: Path, with_charts: bool = True) -> tuple[int, str]:
    out.mkdir(parents=True, exist_ok=True)
    for group in trend.groups[:MAX_CHARTED_GROUPS if with_charts else 0]:
        (total, _), (requests, _) = chart_files(group)
        result_charts.save(charts.total_figure(group), out / total)
        result_charts.save(charts.requests_figure(group), out / requests)
    (out / HISTORY_MD).write_text(markdown(trend), encoding="utf-8")
    (out / HISTORY_JSON).write_text(json.dumps(as_json(trend), indent=2), encoding="utf-8")
    return (1 if trend.regressions else 0), text(trend, out)
