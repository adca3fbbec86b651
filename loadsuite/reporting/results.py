"""Read a run folder: Locust's CSVs and summary.json into pandas frames, checked, with one-line errors."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .format import ordered_percentiles

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
# Locust's percentile columns: the points of each request's latency distribution (CDF) chart.
CDF_PERCENTS = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%")
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
    header = set(_header(path)) if path.is_file() else set()
    columns = {**STATS_COLUMNS, **{c: "float64" for c in CDF_PERCENTS if c in header and c not in STATS_COLUMNS}}
    frame = _read_csv(path, columns, required=("Request Count", "Failure Count")).rename(columns=STATS_RENAME)
    frame = frame.rename(columns={c: f"cdf_{c}" for c in CDF_PERCENTS if c not in STATS_COLUMNS})
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
    """summary.json written at the end of the run, or None when the run has none."""
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
    endpoints, total = _one_percentile_rule(endpoints, total, summary)
    run = Run(folder=folder, endpoints=endpoints, total=total, summary=summary)
    if with_history:
        run.history = load_history(folder / HISTORY_CSV)
        run.failures = load_failures(folder / FAILURES_CSV)
    return run


PERCENTILE_COLUMNS = ("p50_ms", "p95_ms", "p99_ms")


def _one_percentile_rule(endpoints: pd.DataFrame, total: pd.Series, summary: dict | None):
    """Percentiles by the rule summary.json uses (format.ordered_percentiles); summary.json's own figures
    win when present, so summary.md, the console and summary.json show the same digits."""
    listed = {(str(e.get("method") or ""), str(e.get("name"))): e
              for e in (summary or {}).get("endpoints") or [] if isinstance(e, dict)}
    totals = (summary or {}).get("totals") if isinstance((summary or {}).get("totals"), dict) else None

    def fixed(row, known):
        source = row
        if known and known.get("requests") == row["requests"] and all(known.get(c) is not None for c in PERCENTILE_COLUMNS):
            source = known  # (re-applying the rule is a no-op on new summaries, and fixes older ones)
        values = ordered_percentiles(*(source[c] for c in PERCENTILE_COLUMNS), lowest=row["min_ms"], highest=row["max_ms"])
        return tuple(np.nan if v is None else v for v in values)

    if not endpoints.empty:
        rows = [fixed(r, listed.get((r["method"], r["name"]))) for r in endpoints.to_dict("records")]
        endpoints = endpoints.copy()
        endpoints[list(PERCENTILE_COLUMNS)] = pd.DataFrame(rows, index=endpoints.index, columns=list(PERCENTILE_COLUMNS))
    total = total.copy()
    for column, value in zip(PERCENTILE_COLUMNS, fixed(total, totals)):
        total[column] = value
    return endpoints, total


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
