"""Turn a Locust run folder into a table, charts and summary.md, or compare two runs for regressions.

Usage:
  python analyze_results.py RESULTS_DIR
      Reads stats_stats.csv, stats_stats_history.csv, stats_failures.csv (and summary.json when
      present), prints the per-request table and writes chart_*.png and summary.md into RESULTS_DIR.
  python analyze_results.py --compare BASELINE_DIR CURRENT_DIR [--tolerance 10%] [--out DIR]
      Compares p50/p95/p99, failure rate and requests/s per request name; writes compare.md and
      chart_compare.png into CURRENT_DIR (or --out) and exits 1 when a metric regressed beyond tolerance.

Regression rules (compare mode), each metric judged on its own:
  p50/p95/p99  regressed when current is more than the tolerance (percent, --tolerance-p95 etc.,
               default --tolerance) above baseline AND at least --min-delta-ms (default 5 ms) above it,
               so 1 ms -> 2 ms is noise, not a 100% regression.
  failure rate regressed when it rose by more than --tolerance-failure-rate percentage POINTS
               (absolute, default 1.0): relative change is meaningless near zero (0.1% -> 0.2% is "+100%").
  requests/s   regressed when it DROPPED by more than the tolerance (percent) AND by at least
               --min-delta-rps (default 1.0 req/s). Only meaningful between runs of the same load profile.
Request names present (with at least one request) in only one run are listed, not compared.

Exit codes: 0 ok (or no regression), 1 regression, 2 bad input or usage (one-line message, no traceback).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import result_charts
from result_charts import short_reason

STATS_CSV = "stats_stats.csv"
HISTORY_CSV = "stats_stats_history.csv"
FAILURES_CSV = "stats_failures.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
COMPARE_MD = "compare.md"
TOTAL_NAME = "Aggregated"  # Locust's name for the all-requests row (its Type column is empty)

NA = ["N/A", ""]  # Locust writes N/A percentiles for entries without requests

# Columns read from each CSV, with the dtype used to parse them; nothing else is read.
STATS_COLUMNS = {
    "Type": "str", "Name": "str", "Request Count": "float64", "Failure Count": "float64",
    "Median Response Time": "float64", "Average Response Time": "float64", "Min Response Time": "float64",
    "Max Response Time": "float64", "Requests/s": "float64", "Failures/s": "float64",
    "95%": "float64", "99%": "float64",
}
STATS_RENAME = {
    "Type": "method", "Name": "name", "Request Count": "requests", "Failure Count": "failures",
    "Median Response Time": "p50_ms", "Average Response Time": "avg_ms", "Min Response Time": "min_ms",
    "Max Response Time": "max_ms", "Requests/s": "rps", "Failures/s": "fps", "95%": "p95_ms", "99%": "p99_ms",
}
HISTORY_COLUMNS = {
    "Timestamp": "float64", "User Count": "float64", "Type": "str", "Name": "str",
    "50%": "float64", "95%": "float64", "99%": "float64", "100%": "float64",
    "Total Request Count": "float64", "Total Failure Count": "float64",
}
FAILURES_COLUMNS = {"Method": "str", "Name": "str", "Error": "str", "Occurrences": "float64"}
HISTORY_CHUNK_ROWS = 200_000  # bounds memory: only the Aggregated rows of each chunk are kept
MAX_PLOT_POINTS = 720
NICE_BINS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


class InputError(Exception):
    """Bad input (missing, empty, truncated or non-Locust file); the message is one line naming the file."""


# ----------------------------------------------------------------------------------------------- reading


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: file not found (run Locust with --csv PREFIX --csv-full-history)")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: file is empty (not a Locust CSV)")
    with path.open("rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            raise InputError(f"{path}: file is truncated (last line is incomplete)")


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a Locust CSV ({exc.__class__.__name__})") from None


def _read_csv(path: Path, columns: dict[str, str], *, required: tuple[str, ...], chunk_filter=None) -> pd.DataFrame:
    """Read only `columns` of a Locust CSV with fixed dtypes; rows with a missing required value mean truncation."""
    _check_file(path)
    missing = [c for c in columns if c not in _header(path)]
    if missing:
        raise InputError(f"{path}: not a Locust CSV, missing column(s) {', '.join(missing)}")
    text_cols = [c for c, dtype in columns.items() if dtype == "str"]
    options = dict(
        usecols=list(columns), dtype=columns, keep_default_na=False,
        na_values={c: NA for c in columns if c not in text_cols}, encoding="utf-8", engine="c",
    )
    try:
        if chunk_filter is None:
            frames = [pd.read_csv(path, **options)]
        else:
            frames = [chunk_filter(_checked(path, chunk, required))
                      for chunk in pd.read_csv(path, chunksize=HISTORY_CHUNK_ROWS, **options)]
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"{path}: not a Locust CSV ({reason})") from None
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame if chunk_filter is not None else _checked(path, frame, required)


def _checked(path: Path, frame: pd.DataFrame, required: tuple[str, ...]) -> pd.DataFrame:
    bad = frame[list(required)].isna().any(axis=1)
    if bad.any():
        row = int(frame.index[np.flatnonzero(bad.to_numpy())[0]]) + 2  # header is line 1
        raise InputError(f"{path}: line {row} is incomplete or not numeric (truncated or not a Locust CSV)")
    return frame


def load_stats(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Per-request rows of stats_stats.csv (sorted by name) and the Aggregated total row."""
    frame = _read_csv(path, STATS_COLUMNS, required=("Request Count", "Failure Count")).rename(columns=STATS_RENAME)
    is_total = (frame["name"] == TOTAL_NAME) & (frame["method"] == "")
    if frame.empty:
        raise InputError(f"{path}: no requests recorded (header only: empty run); nothing to analyse")
    if not is_total.any():
        raise InputError(f"{path}: no Aggregated row (not a Locust stats CSV)")
    total = _finish_stats(frame[is_total].iloc[[-1]].reset_index(drop=True)).iloc[0]
    if total["requests"] <= 0:
        raise InputError(f"{path}: no requests recorded (empty run); nothing to analyse")
    endpoints = _finish_stats(frame[~is_total].reset_index(drop=True))
    return endpoints.sort_values(["name", "method"], ignore_index=True), total


def _finish_stats(rows: pd.DataFrame) -> pd.DataFrame:
    rows["requests"] = rows["requests"].astype("int64")
    rows["failures"] = rows["failures"].astype("int64")
    called = rows["requests"] > 0
    rows["failure_pct"] = np.where(called, 100.0 * rows["failures"] / rows["requests"].where(called, 1), np.nan)
    for col in ("p50_ms", "p95_ms", "p99_ms", "avg_ms", "min_ms", "max_ms"):
        rows.loc[~called, col] = np.nan  # Locust writes 0 for "no data": show "not called", never a fake 0
    return rows


def load_failures(path: Path) -> pd.DataFrame:
    """stats_failures.csv as method, name, error, occurrences (header only means no failures)."""
    frame = _read_csv(path, FAILURES_COLUMNS, required=("Occurrences",))
    frame = frame.rename(columns={"Method": "method", "Name": "name", "Error": "error", "Occurrences": "occurrences"})
    frame["occurrences"] = frame["occurrences"].astype("int64")
    return frame


def _aggregated_only(chunk: pd.DataFrame) -> pd.DataFrame:
    keep = (chunk["Name"] == TOTAL_NAME) & (chunk["Type"] == "")
    return chunk.loc[keep, ["Timestamp", "User Count", "50%", "95%", "99%", "100%",
                            "Total Request Count", "Total Failure Count"]]


def load_history(path: Path) -> pd.DataFrame:
    """The Aggregated rows of stats_stats_history.csv, read in chunks so a 24-hour file stays in bounded memory."""
    rows = _read_csv(path, HISTORY_COLUMNS, chunk_filter=_aggregated_only,
                     required=("Timestamp", "User Count", "Total Request Count", "Total Failure Count"))
    rows = rows.rename(columns={
        "Timestamp": "ts", "User Count": "users", "50%": "p50_ms", "95%": "p95_ms", "99%": "p99_ms",
        "100%": "max_ms", "Total Request Count": "requests", "Total Failure Count": "failures"})
    rows = rows.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last").reset_index(drop=True)
    # Locust writes 0 (not N/A) for "no samples in the 10 s window": a zero max means no data there.
    empty_window = ~(rows["max_ms"] > 0)
    rows.loc[empty_window, ["p50_ms", "p95_ms", "p99_ms"]] = np.nan
    return rows


def pick_bin_seconds(span_s: float, min_bin_s: int = 1) -> int:
    """The smallest round bin width that keeps the plot under MAX_PLOT_POINTS points."""
    for width in NICE_BINS_S:
        if width >= min_bin_s and span_s / width <= MAX_PLOT_POINTS:
            return width
    return int(math.ceil(span_s / MAX_PLOT_POINTS / 3600.0)) * 3600


def timeline(history: pd.DataFrame, min_bin_s: int = 1) -> tuple[pd.DataFrame, int]:
    """Downsampled time series: users, mean p50/p95/p99 per bin and exact requests/s, failures/s per bin.

    Rates come from the cumulative counters (delta count / delta time), not from Locust's smoothed
    Requests/s column, so every bin's rate is exact; a counter reset (--reset-stats) restarts from the value.
    """
    columns = ["users", "p50_ms", "p95_ms", "p99_ms", "rps", "fps"]
    if history.empty:
        return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], tz="UTC", name="time")), 1
    span = float(history["ts"].iloc[-1] - history["ts"].iloc[0])
    bin_s = pick_bin_seconds(span, min_bin_s)
    key = (history["ts"] // bin_s) * bin_s
    grouped = history.groupby(key, sort=True)
    out = pd.DataFrame({
        "ts_last": grouped["ts"].last(),
        "users": grouped["users"].max(),
        "p50_ms": grouped["p50_ms"].mean(),
        "p95_ms": grouped["p95_ms"].mean(),
        "p99_ms": grouped["p99_ms"].mean(),
        "requests": grouped["requests"].last(),
        "failures": grouped["failures"].last(),
    })
    dt = out["ts_last"].diff()
    for count, rate in (("requests", "rps"), ("failures", "fps")):
        delta = out[count].diff()
        delta = delta.where(delta >= 0, out[count])
        out[rate] = delta / dt
    out.index = pd.to_datetime(out.index, unit="s", utc=True)
    out.index.name = "time"
    return out[columns], bin_s


def load_summary(path: Path) -> dict | None:
    """summary.json written by verdict.py, or None when the run has none."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc.__class__.__name__}); delete it or re-run") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


@dataclass
class Run:
    """One run folder, loaded."""

    folder: Path
    endpoints: pd.DataFrame
    total: pd.Series
    history: pd.DataFrame | None = None
    failures: pd.DataFrame | None = None
    summary: dict | None = None

    @property
    def run_id(self) -> str:
        return str((self.summary or {}).get("run_id") or self.folder.resolve().name)


def _run_folder(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"{path}: results folder not found (pass a run folder such as results/latest)")
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (pass a run folder such as results/latest)")
    return path


def load_run(folder: Path, *, with_history: bool = True) -> Run:
    """Load a run folder; compare mode needs only stats_stats.csv (with_history=False)."""
    folder = _run_folder(Path(folder))
    endpoints, total = load_stats(folder / STATS_CSV)
    summary = load_summary(folder / SUMMARY_JSON)
    endpoints = _add_uncalled_from_summary(endpoints, summary)
    run = Run(folder=folder, endpoints=endpoints, total=total, summary=summary)
    if with_history:
        run.history = load_history(folder / HISTORY_CSV)
        run.failures = load_failures(folder / FAILURES_CSV)
    return run


def _add_uncalled_from_summary(endpoints: pd.DataFrame, summary: dict | None) -> pd.DataFrame:
    """Request names summary.json knows but Locust never recorded become explicit "not called" rows."""
    listed = (summary or {}).get("endpoints") or []
    known = set(zip(endpoints["method"], endpoints["name"]))
    extra = [{"method": str(e.get("method") or ""), "name": str(e["name"]), "requests": 0, "failures": 0}
             for e in listed if isinstance(e, dict) and e.get("name") and not e.get("requests")
             and (str(e.get("method") or ""), str(e["name"])) not in known]
    if not extra:
        return endpoints
    rows = _finish_stats(pd.DataFrame(extra).reindex(columns=endpoints.columns))
    return pd.concat([endpoints, rows], ignore_index=True).sort_values(["name", "method"], ignore_index=True)


# ----------------------------------------------------------------------------------------------- tables

TABLE_HEADERS = ("Request", "Requests", "Failures", "Failure %", "Median ms", "p95 ms", "p99 ms",
                 "Average ms", "Max ms", "Req/s")


def fmt_ms(value) -> str:
    """Milliseconds: whole numbers from 100 ms, one decimal below (Locust's percentiles are whole already)."""
    if value is None or pd.isna(value):
        return "-"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def fmt_num(value, digits: int = 2) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _label(method: str, name: str, duplicated: set[str]) -> str:
    return f"{method} {name}" if name in duplicated and method else name


def duplicated_names(frame: pd.DataFrame) -> set[str]:
    """Names used with more than one method: those rows are labelled "METHOD name"."""
    counts = frame["name"].value_counts()
    return set(counts[counts > 1].index)


def table_rows(endpoints: pd.DataFrame, total: pd.Series) -> list[list[str]]:
    """Rows of the per-request table (strings), the Aggregated total last."""
    dup = duplicated_names(endpoints)
    rows = []
    for row in [*endpoints.itertuples(index=False), None]:
        r = total if row is None else row._asdict()
        label = "Total" if row is None else _label(r["method"], r["name"], dup)
        if r["requests"] == 0:
            rows.append([label, "0", "0", "-", *(["not called"] + ["-"] * 4), "-"])
            continue
        rows.append([label, str(int(r["requests"])), str(int(r["failures"])), fmt_num(r["failure_pct"]),
                     fmt_ms(r["p50_ms"]), fmt_ms(r["p95_ms"]), fmt_ms(r["p99_ms"]), fmt_ms(r["avg_ms"]),
                     fmt_ms(r["max_ms"]), fmt_num(r["rps"])])
    return rows


def text_table(headers, rows) -> str:
    """A plain aligned table for the terminal: text left, numbers right."""
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def md_escape(text) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(headers, rows, left: int = 1) -> str:
    """A GitHub Markdown table: the first `left` columns left-aligned, the rest (numbers) right-aligned."""
    out = ["| " + " | ".join(md_escape(h) for h in headers) + " |",
           "|" + "|".join([":---"] * left + ["---:"] * (len(headers) - left)) + "|"]
    out += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- summary.md

PASS, FAIL, UNKNOWN = "✅", "❌", "⚠️"
CHARTS = (
    ("chart_response_times.png", "Response time percentiles over time"),
    ("chart_throughput.png", "Requests and failures per second"),
    ("chart_endpoint_percentiles.png", "Response time percentiles per request"),
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


def _plain(value) -> str:
    """A JSON number without float noise (1000.0 -> 1000); None -> "-"."""
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _mark(passed) -> str:
    return PASS if passed is True else FAIL if passed is False else UNKNOWN


def _flatten(prefix: str, value, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
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
    if verdict and verdict.get("reasons"):
        lines += ["", "Reasons:", *[f"- {md_escape(r)}" for r in verdict["reasons"]]]

    lines += ["", "## Requests", "", md_table(TABLE_HEADERS, table_rows(run.endpoints, run.total))]
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
                [_mark(t.get("passed")), str(t.get("metric")), str(t.get("scope")), _plain(t.get("limit")),
                 _plain(t.get("observed"))] for t in thresholds if isinstance(t, dict)]))
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
                         *(f"{_plain(own.get(key))} / {_plain(row.get(key))}" for key in ("p50_ms", "p95_ms", "p99_ms"))])
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
            violations = consistency.get("violations") or []
            if violations:
                lines += ["", md_table(("Product", "Kind", "Message"), left=3, rows=[
                    [str(v.get("product")), str(v.get("kind")), str(v.get("message"))]
                    for v in violations[:20] if isinstance(v, dict)])]
                if len(violations) > 20:
                    lines.append(f"\n… and {len(violations) - 20} more violations in {SUMMARY_JSON}.")

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
    figures = {
        "chart_response_times.png": result_charts.response_times_figure(tl, bin_s),
        "chart_throughput.png": result_charts.throughput_figure(tl, bin_s),
        "chart_endpoint_percentiles.png": result_charts.endpoint_percentiles_figure(run.endpoints),
        "chart_failures.png": result_charts.failures_figure(run.failures),
    }
    for filename, figure in figures.items():
        result_charts.save(figure, run.folder / filename)
    (run.folder / SUMMARY_MD).write_text(summary_markdown(run, list(CHARTS)), encoding="utf-8")
    return run, text_table(TABLE_HEADERS, table_rows(run.endpoints, run.total))


# ----------------------------------------------------------------------------------------------- compare

METRICS = (  # key, column, label, header
    ("p50", "p50_ms", "p50", "p50 ms"),
    ("p95", "p95_ms", "p95", "p95 ms"),
    ("p99", "p99_ms", "p99", "p99 ms"),
    ("failure_rate", "failure_pct", "Failure %", "Failure %"),
    ("rps", "rps", "Req/s", "Req/s"),
)


@dataclass(frozen=True)
class Tolerances:
    """Per-metric limits; latency and rps in percent, failure rate in absolute percentage points."""

    p50: float = 10.0
    p95: float = 10.0
    p99: float = 10.0
    rps: float = 10.0
    failure_rate_points: float = 1.0
    min_delta_ms: float = 5.0
    min_delta_rps: float = 1.0


@dataclass
class Verdict:
    """One metric of one request name compared."""

    baseline: float
    current: float
    change_pct: float | None  # None when the baseline is 0
    regressed: bool
    improved: bool


@dataclass
class Comparison:
    """Everything compare mode reports."""

    labels: list[str]  # request labels compared, Total last
    verdicts: dict[tuple[str, str], Verdict]  # (label, metric key) -> verdict
    only_baseline: list[str]
    only_current: list[str]
    tolerances: Tolerances

    @property
    def regressions(self) -> list[tuple[str, str, Verdict]]:
        return [(label, key, v) for (label, key), v in self.verdicts.items() if v.regressed]


def judge(key: str, base: float, cur: float, tol: Tolerances) -> Verdict:
    """Whether one metric regressed (or improved) beyond its tolerance; see the module docstring for the rules."""
    change = None if base == 0 else 100.0 * (cur - base) / base
    if key == "failure_rate":
        delta = cur - base
        return Verdict(base, cur, change, delta > tol.failure_rate_points, -delta > tol.failure_rate_points)
    if key == "rps":
        drop = base - cur
        limit = tol.rps
        return Verdict(base, cur, change,
                       drop >= tol.min_delta_rps and (change is not None and -change > limit),
                       -drop >= tol.min_delta_rps and (change is None or change > limit))
    limit = getattr(tol, key)
    delta = cur - base
    worse = delta >= tol.min_delta_ms and (change is None or change > limit)
    better = -delta >= tol.min_delta_ms and (change is not None and -change > limit)
    return Verdict(base, cur, change, worse, better)


def _keyed(endpoints: pd.DataFrame, total: pd.Series) -> dict[tuple[str, str], dict]:
    rows = {(r["method"], r["name"]): r for r in endpoints.to_dict("records") if r["requests"] > 0}
    rows[("", "Total")] = total.to_dict()
    return rows


def compare_runs(baseline: Run, current: Run, tol: Tolerances) -> Comparison:
    """Judge every metric of every request name called in both runs, plus the total."""
    base, cur = _keyed(baseline.endpoints, baseline.total), _keyed(current.endpoints, current.total)
    names = pd.DataFrame([{"method": m, "name": n} for m, n in set(base) | set(cur)])
    dup = duplicated_names(names)
    common = sorted((set(base) & set(cur)) - {("", "Total")}, key=lambda k: (k[1], k[0])) + [("", "Total")]
    verdicts = {}
    labels = []
    for key in common:
        label = _label(*key, dup)
        labels.append(label)
        for metric, column, _, _ in METRICS:
            b, c = base[key].get(column), cur[key].get(column)
            if b is None or c is None or pd.isna(b) or pd.isna(c):
                continue
            verdicts[(label, metric)] = judge(metric, float(b), float(c), tol)
    only_b = sorted(_label(*k, dup) for k in set(base) - set(cur))
    only_c = sorted(_label(*k, dup) for k in set(cur) - set(base))
    return Comparison(labels, verdicts, only_b, only_c, tol)


def _fmt_metric(metric: str, value: float) -> str:
    return fmt_num(value) if metric in ("failure_rate", "rps") else fmt_ms(value)


def compare_cell(metric: str, v: Verdict | None, marks: bool = True) -> str:
    if v is None:
        return "-"
    if metric == "failure_rate":  # judged in absolute points, so shown in points
        change = f"{v.current - v.baseline:+.2f} pt"
    else:
        change = "new" if v.change_pct is None and v.current else "±0%" if v.change_pct is None \
            else f"{v.change_pct:+.1f}%"
    mark = (f" {FAIL}" if v.regressed else " ▼" if v.improved and metric != "rps" else " ▲" if v.improved else "") \
        if marks else (" REGRESSED" if v.regressed else "")
    return f"{_fmt_metric(metric, v.baseline)} → {_fmt_metric(metric, v.current)} ({change}){mark}"


def compare_rows(cmp: Comparison, marks: bool = True) -> list[list[str]]:
    return [[label, *(compare_cell(m, cmp.verdicts.get((label, m)), marks) for m, *_ in METRICS)]
            for label in cmp.labels]


def compare_headers() -> list[str]:
    return ["Request", *(header for *_, header in METRICS)]


def tolerance_text(tol: Tolerances) -> str:
    return (f"p50 +{tol.p50:g}%, p95 +{tol.p95:g}%, p99 +{tol.p99:g}% (and at least +{tol.min_delta_ms:g} ms); "
            f"failure rate +{tol.failure_rate_points:g} percentage points; "
            f"requests/s -{tol.rps:g}% (and at least -{tol.min_delta_rps:g} req/s)")


def compare_markdown(baseline: Run, current: Run, cmp: Comparison, chart: str) -> str:
    lines = [f"# Run comparison: {md_escape(current.run_id)} vs baseline {md_escape(baseline.run_id)}", ""]
    regs = cmp.regressions
    lines.append(f"{FAIL} **{len(regs)} regression(s)** beyond tolerance." if regs
                 else f"{PASS} **No regression** beyond tolerance.")
    lines += ["", f"Tolerances: {tolerance_text(cmp.tolerances)}.", ""]
    if regs:
        names = {key: label for key, _, label, _ in METRICS}
        lines += [f"- {md_escape(label)} {names[key]}: {compare_cell(key, v, marks=False).replace(' REGRESSED', '')}"
                  for label, key, v in regs]
        lines.append("")
    lines += ["Each cell: baseline → current (change). "
              f"{FAIL} regressed beyond tolerance; ▼ lower latency / failure rate, ▲ higher req/s: improved beyond "
              "tolerance.", "",
              md_table(compare_headers(), compare_rows(cmp))]
    if cmp.only_baseline:
        lines += ["", f"Only in the baseline (not compared): {', '.join(md_escape(n) for n in cmp.only_baseline)}."]
    if cmp.only_current:
        lines += ["", f"Only in the current run (not compared): {', '.join(md_escape(n) for n in cmp.only_current)}."]
    lines += ["", f"![Comparison]({chart})", ""]
    return "\n".join(lines)


def run_compare(base_dir: Path, cur_dir: Path, tol: Tolerances, out_dir: Path | None) -> tuple[int, str]:
    baseline = load_run(base_dir, with_history=False)
    current = load_run(cur_dir, with_history=False)
    out = Path(out_dir) if out_dir is not None else current.folder
    out.mkdir(parents=True, exist_ok=True)
    cmp = compare_runs(baseline, current, tol)
    chart = "chart_compare.png"
    result_charts.save(result_charts.compare_figure(cmp, METRICS), out / chart)
    (out / COMPARE_MD).write_text(compare_markdown(baseline, current, cmp, chart), encoding="utf-8")
    text = [f"Baseline {baseline.run_id} -> current {current.run_id}",
            f"Tolerances: {tolerance_text(tol)}", "", text_table(compare_headers(), compare_rows(cmp, marks=False))]
    if cmp.only_baseline:
        text.append(f"Only in the baseline (not compared): {', '.join(cmp.only_baseline)}")
    if cmp.only_current:
        text.append(f"Only in the current run (not compared): {', '.join(cmp.only_current)}")
    text.append(f"{len(cmp.regressions)} regression(s) beyond tolerance" if cmp.regressions
                else "No regression beyond tolerance")
    text.append(f"Wrote {out / COMPARE_MD} and {out / chart}")
    return (1 if cmp.regressions else 0), "\n".join(text)


# ----------------------------------------------------------------------------------------------- CLI


def percent(text: str) -> float:
    """'10%' or '10' -> 10.0 (always percent)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r} (e.g. 10%)") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a percentage >= 0: {text!r}")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analyze_results.py", description="Tables, charts and summary.md for a Locust run; --compare for "
        "run-vs-run regressions (exit 1 on regression).",
        epilog="Failure-rate tolerance is absolute (percentage points); latency and req/s tolerances are relative.")
    parser.add_argument("results_dir", nargs="?", type=Path, help="run folder, e.g. results/latest")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BASELINE_DIR", "CURRENT_DIR"),
                        help="compare two run folders instead")
    parser.add_argument("--out", type=Path, help="compare mode: where compare.md and chart_compare.png go "
                        "(default CURRENT_DIR)")
    parser.add_argument("--tolerance", type=percent, default=10.0, help="default relative tolerance (default 10%%)")
    for metric in ("p50", "p95", "p99", "rps"):
        parser.add_argument(f"--tolerance-{metric}", type=percent, help=f"{metric} tolerance (default --tolerance)")
    parser.add_argument("--tolerance-failure-rate", type=non_negative, default=1.0,
                        help="allowed rise of the failure rate in percentage POINTS (default 1.0)")
    parser.add_argument("--min-delta-ms", type=non_negative, default=5.0,
                        help="latency changes smaller than this are never regressions (default 5)")
    parser.add_argument("--min-delta-rps", type=non_negative, default=1.0,
                        help="req/s drops smaller than this are never regressions (default 1.0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.results_dir is None) == (args.compare is None):
        parser.error("pass either RESULTS_DIR or --compare BASELINE_DIR CURRENT_DIR")
    if args.out is not None and args.compare is None:
        parser.error("--out only applies to --compare")
    try:
        if args.compare is not None:
            tol = Tolerances(
                p50=args.tolerance if args.tolerance_p50 is None else args.tolerance_p50,
                p95=args.tolerance if args.tolerance_p95 is None else args.tolerance_p95,
                p99=args.tolerance if args.tolerance_p99 is None else args.tolerance_p99,
                rps=args.tolerance if args.tolerance_rps is None else args.tolerance_rps,
                failure_rate_points=args.tolerance_failure_rate,
                min_delta_ms=args.min_delta_ms, min_delta_rps=args.min_delta_rps)
            code, text = run_compare(args.compare[0], args.compare[1], tol, args.out)
            print(text)
            return code
        run, table = analyse(args.results_dir)
        print(f"Run {run.run_id}: {int(run.total['requests'])} requests, {int(run.total['failures'])} failures")
        print(table)
        print(f"Wrote {SUMMARY_MD} and {len(CHARTS)} charts to {run.folder}")
        return 0
    except InputError as exc:
        print(f"analyze_results: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"analyze_results: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
