"""summary.md and the charts of one run folder (what `analyze_results.py RESULTS_DIR` writes)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import charts as result_charts
from .charts import short_reason
from .console import inconclusive_reason, scenario_notes
from .verdict import violation_counts
from .results import FAILURES_CSV, SUMMARY_JSON, SUMMARY_MD, Run, load_run, timeline
from .format import fmt_metric, fmt_ms, small_sample_note
from .tables import TABLE_HEADERS, has_small_samples, md_escape, md_table, table_rows, text_table


PASS, FAIL, UNKNOWN = "✅", "❌", "⚠️"
CHARTS = (
    ("chart_response_times.png", "Response time percentiles over time, with the p95/p99 limits"),
    ("chart_throughput.png", "Requests and failures per second, with the users"),
    ("chart_latency_distribution.png", "Latency distribution per request"),
    ("chart_endpoint_percentiles.png", "Response time percentiles per request, with sample counts"),
    ("chart_failures.png", "Failures by request and reason"),
)


def _fmt_duration(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return "unknown"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def run_duration_s(run: Run) -> float | None:
    summary = run.summary or {}
    if isinstance(summary.get("duration_s"), (int, float)):
        return float(summary["duration_s"])
    if run.history is not None and len(run.history) > 1:
        return float(run.history["ts"].iloc[-1] - run.history["ts"].iloc[0])
    return None


def _mark(passed) -> str:
    return PASS if passed is True else FAIL if passed is False else UNKNOWN


def _flatten(prefix: str, value, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    elif isinstance(value, (dict, list)) and not value:
        out.append((prefix, "none"))  # an empty counter group reads as "none", never as {} or []
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out.append((prefix, text if len(text) <= 100 else text[:99] + "…"))


def summary_markdown(run: Run, charts: list[tuple[str, str]]) -> str:
    """summary.md: header, per-request table, failures, thresholds, oracle, custom stats, charts."""
    s = run.summary or {}
    lines = [f"# Load test run {md_escape(run.run_id)}", ""]
    facts = [("Host", s.get("host") or "unknown"), ("Duration", _fmt_duration(run_duration_s(run)))]
    users = s.get("users") if isinstance(s.get("users"), dict) else {}
    if users:
        facts.append(("Users", f"peak {users.get('peak')}, final {users.get('final')}"))
    if run.history is not None and not run.history.empty and not users:
        facts.append(("Users", f"peak {int(run.history['users'].max())}"))
    for key, label in (("client", "Client"), ("shape", "Load shape")):
        if s.get(key):
            facts.append((label, s[key]))
    if s.get("started_at"):
        facts.append(("Started", s["started_at"]))
    workers = s.get("workers") if isinstance(s.get("workers"), dict) else {}
    if workers.get("count"):
        lost = workers.get("lost") or []
        facts.append(("Workers", f"{workers['count']}" + (f" ({len(lost)} lost: {', '.join(map(str, lost))})"
                                                              if lost else "")))
    verdict = s.get("verdict") if isinstance(s.get("verdict"), dict) else None
    if verdict is not None:
        facts.append(("Verdict", f"{PASS} passed" if verdict.get("passed") else f"{FAIL} failed"
                      + (f" (exit {verdict.get('exit_code')})" if verdict.get("exit_code") is not None else "")))
    lines += [f"- **{k}:** {md_escape(v)}" for k, v in facts]
    if s.get("interrupted"):
        lines.append(f"- {UNKNOWN} **The run was interrupted**: numbers cover only the part that ran.")
    lines += [f"- {UNKNOWN} {md_escape(note)}" for note in scenario_notes(s)]
    if verdict and verdict.get("reasons"):
        lines += ["", "Reasons:", *[f"- {md_escape(r)}" for r in verdict["reasons"]]]

    lines += ["", "## Requests", "", md_table(TABLE_HEADERS, table_rows(run.endpoints, run.total))]
    if has_small_samples(run.endpoints):
        lines += ["", "\\" + small_sample_note()]  # escaped: a leading * would start a Markdown list
    uncalled = run.endpoints.loc[run.endpoints["requests"] == 0, "name"].tolist()
    if uncalled:
        lines += ["", f"Not called in this run: {', '.join(md_escape(n) for n in uncalled)}."]

    lines += ["", "## Failures", ""]
    failures = run.failures if run.failures is not None else pd.DataFrame()
    if failures.empty:
        lines.append(f"{PASS} No failures.")
    else:
        top = failures.sort_values("occurrences", ascending=False).head(20)
        lines.append(md_table(("Request", "Reason", "Count"),
                              [[f"{r.method} {r.name}", short_reason(r.error, 160), str(r.occurrences)]
                               for r in top.itertuples()], left=2))
        if len(failures) > len(top):
            lines.append(f"\n… and {len(failures) - len(top)} more kinds in {FAILURES_CSV}.")

    thresholds = s.get("thresholds") if isinstance(s.get("thresholds"), list) else None
    if thresholds is not None:
        lines += ["", "## Thresholds", ""]
        if thresholds:
            lines.append(md_table(("", "Metric", "Scope", "Limit", "Observed"), left=3, rows=[
                [_mark(t.get("passed")), str(t.get("metric")), str(t.get("scope")),
                 fmt_metric(str(t.get("metric")), t.get("limit")), fmt_metric(str(t.get("metric")), t.get("observed"))]
                for t in thresholds if isinstance(t, dict)]))
        else:
            lines.append("No thresholds configured.")

    open_model = s.get("open_model") if isinstance(s.get("open_model"), dict) else None
    if open_model is not None:
        lines += ["", "## Open model", "", f"{_mark(open_model.get('met'))} {md_escape(str(open_model.get('message', '')))}"]

    corrected = s.get("corrected_latency") if isinstance(s.get("corrected_latency"), dict) else None
    if corrected:
        measured = {e.get("name"): e for e in s.get("endpoints", []) if isinstance(e, dict)}
        measured["Aggregated"] = s.get("totals") or {}
        lines += ["", "## Latency corrected for coordinated omission", "",
                  "Measured from each request's intended start in the open model's schedule (as wrk2 does), "
                  "beside Locust's own numbers, which start the clock when the request is actually sent.", ""]
        rows = []
        for name, row in sorted(corrected.items(), key=lambda item: (item[0] == "Aggregated", item[0])):
            if not isinstance(row, dict):
                continue
            own = measured.get(name, {})
            rows.append([str(name), str(row.get("count", "")),
                         *(f"{fmt_ms(own.get(key))} / {fmt_ms(row.get(key))}" for key in ("p50_ms", "p95_ms", "p99_ms"))])
        lines.append(md_table(("Request", "Count", "p50 ms (Locust / corrected)", "p95 ms (Locust / corrected)",
                               "p99 ms (Locust / corrected)"), rows, left=1))

    consistency = s.get("consistency") if isinstance(s.get("consistency"), dict) else None
    if consistency is not None:
        lines += ["", "## Inventory consistency (oracle)", ""]
        if not consistency.get("enabled", True):
            lines.append("Oracle disabled.")
        else:
            state = consistency.get("passed")
            word = {True: "passed", False: "failed"}.get(state, "inconclusive")
            lines.append(f"{_mark(state)} **{word}**: {consistency.get('products_checked', 0)} products checked, "
                         f"{consistency.get('inconclusive', 0)} inconclusive, "
                         f"{consistency.get('dropped_records', 0)} records dropped.")
            why = inconclusive_reason(consistency)
            if why:
                lines += ["", f"Why inconclusive: {md_escape(why)}"]
            violations = consistency.get("violations") or []
            counts = violation_counts(consistency)
            if counts:
                units = consistency.get("violation_units") or {}
                lines += ["", md_table(("Kind", "Violations", "Units"), left=1, rows=[
                    [kind, str(count), str(units.get(kind, "-"))] for kind, count in counts.items()])]
            if violations:
                lines += ["", md_table(("Product", "Kind", "Message"), left=3, rows=[
                    [str(v.get("product")), str(v.get("kind")), str(v.get("message"))]
                    for v in violations[:20] if isinstance(v, dict)])]
                total = max(sum(counts.values()), len(violations))
                if total > min(len(violations), 20):
                    lines.append(f"\n… {total - min(len(violations), 20)} more violations not listed here "
                                 f"(counted above; {SUMMARY_JSON} lists up to {len(violations)}).")

    custom = s.get("custom_stats")
    if isinstance(custom, dict) and custom:
        flat: list[tuple[str, str]] = []
        _flatten("", custom, flat)
        lines += ["", "## Custom stats", "", md_table(("Stat", "Value"), [list(p) for p in flat[:60]], left=2)]
        if len(flat) > 60:
            lines.append(f"\n… and {len(flat) - 60} more in {SUMMARY_JSON}.")

    lines += ["", "## Charts", ""]
    for filename, title in charts:
        lines += [f"### {title}", "", f"![{title}]({filename})", ""]
    return "\n".join(lines).rstrip() + "\n"


def analyse(folder: Path) -> tuple[Run, str]:
    """Load a run, write its charts and summary.md into the folder; return the run and the printed table."""
    run = load_run(folder)
    workers = (run.summary or {}).get("workers")
    distributed = isinstance(workers, dict) and bool(workers.get("count"))
    # Workers report to the master every 3 s: finer bins would show that batching as a saw-tooth.
    tl, bin_s = timeline(run.history, min_bin_s=5 if distributed else 1)
    limits = result_charts.total_latency_limits(run.summary)
    figures = {
        "chart_response_times.png": result_charts.response_times_figure(tl, bin_s, limits),
        "chart_throughput.png": result_charts.throughput_figure(tl, bin_s),
        "chart_latency_distribution.png": result_charts.latency_distribution_figure(run.endpoints, limits),
        "chart_endpoint_percentiles.png": result_charts.endpoint_percentiles_figure(run.endpoints),
        "chart_failures.png": result_charts.failures_figure(run.failures),
    }
    for filename, figure in figures.items():
        result_charts.save(figure, run.folder / filename)
    (run.folder / SUMMARY_MD).write_text(summary_markdown(run, list(CHARTS)), encoding="utf-8")
    table = text_table(TABLE_HEADERS, table_rows(run.endpoints, run.total))
    return run, table + ("\n" + small_sample_note() if has_small_samples(run.endpoints) else "")
