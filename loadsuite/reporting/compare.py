"""Run-vs-run comparison: per request and metric, a regression only beyond the tolerance and the floor."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import charts as result_charts
from . import comparable
from .format import fmt_ms, fmt_num, fmt_points
from .markdown import FAIL, PASS, UNKNOWN
from .results import COMPARE_MD, Run, load_run
from .tables import _label, duplicated_names, md_escape, md_table, text_table

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
    min_samples: int = 50  # a request with fewer requests than this in either run is not judged (noise)


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
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why it was not judged
    differences: list[str] = field(default_factory=list)  # why the two runs are not comparable
    p95: dict[str, tuple[float, float]] = field(default_factory=dict)  # label -> (baseline, current), judged or not

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
    skipped = {}
    p95 = {}
    for key in common:
        label = _label(*key, dup)
        labels.append(label)
        p95[label] = (float(base[key].get("p95_ms", float("nan"))), float(cur[key].get("p95_ms", float("nan"))))
        counts = int(base[key].get("requests") or 0), int(cur[key].get("requests") or 0)
        if min(counts) < tol.min_samples:
            skipped[label] = f"too few requests (baseline {counts[0]}, current {counts[1]}; minimum {tol.min_samples})"
            continue
        for metric, column, _, _ in METRICS:
            b, c = base[key].get(column), cur[key].get(column)
            if b is None or c is None or pd.isna(b) or pd.isna(c):
                continue
            verdicts[(label, metric)] = judge(metric, float(b), float(c), tol)
    only_b = sorted(_label(*k, dup) for k in set(base) - set(cur))
    only_c = sorted(_label(*k, dup) for k in set(cur) - set(base))
    return Comparison(labels, verdicts, only_b, only_c, tol, skipped, run_differences(baseline, current), p95)


def run_differences(baseline: Run, current: Run) -> list[str]:
    """What makes two runs not comparable (comparable.FIELDS and the duration), from summary.json."""
    b, c = baseline.summary or {}, current.summary or {}
    if not b or not c:
        return [f"no summary.json in the {'baseline' if not b else 'current run'}: users, shape, host and "
                "duration cannot be checked"]
    return comparable.differences(b, c)


def _fmt_metric(metric: str, value: float) -> str:
    if metric == "failure_rate":
        return fmt_points(value)
    return fmt_num(value) if metric == "rps" else fmt_ms(value)


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
    return [[label, *(compare_cell(m, cmp.verdicts.get((label, m)), marks) for m, *_ in METRICS),
             "skipped: " + cmp.skipped[label] if label in cmp.skipped else "judged"]
            for label in cmp.labels]


def compare_headers() -> list[str]:
    return ["Request", *(header for *_, header in METRICS), "Judged"]


def comparability_text(cmp: Comparison) -> str:
    if not cmp.differences:
        return ""
    if cmp.differences[0].startswith("no summary.json"):
        return "NOTE: " + cmp.differences[0]
    return ("WARNING: the runs are not comparable (" + "; ".join(cmp.differences)
            + "): differences may come from the load, not the service")


def tolerance_text(tol: Tolerances) -> str:
    return (f"p50 +{tol.p50:g}%, p95 +{tol.p95:g}%, p99 +{tol.p99:g}% (and at least +{tol.min_delta_ms:g} ms); "
            f"failure rate +{tol.failure_rate_points:g} percentage points; "
            f"requests/s -{tol.rps:g}% (and at least -{tol.min_delta_rps:g} req/s); "
            f"requests with fewer than {tol.min_samples} requests in either run are not judged")


def compare_markdown(baseline: Run, current: Run, cmp: Comparison, chart: str) -> str:
    lines = [f"# Run comparison: {md_escape(current.run_id)} vs baseline {md_escape(baseline.run_id)}", ""]
    regs = cmp.regressions
    lines.append(f"{FAIL} **{len(regs)} regression(s)** beyond tolerance." if regs
                 else f"{UNKNOWN} **Nothing judged**: every request had too few samples." if not cmp.verdicts
                 else f"{PASS} **No regression** beyond tolerance.")
    if cmp.differences:
        lines += ["", f"{UNKNOWN} **{md_escape(comparability_text(cmp))}**"]
    lines += ["", f"Tolerances: {tolerance_text(cmp.tolerances)}.", ""]
    if regs:
        names = {key: label for key, _, label, _ in METRICS}
        lines += [f"- {md_escape(label)} {names[key]}: {compare_cell(key, v, marks=False).replace(' REGRESSED', '')}"
                  for label, key, v in regs]
        lines.append("")
    lines += ["Each cell: baseline → current (change). "
              f"{FAIL} regressed beyond tolerance; ▼ lower latency / failure rate, ▲ higher req/s: improved beyond "
              "tolerance.", "",
              md_table(compare_headers(), compare_rows(cmp), text_columns=(-1,))]
    if cmp.skipped:
        lines += ["", f"Not judged ({len(cmp.skipped)}): "
                  + "; ".join(f"{md_escape(label)}: {md_escape(why)}" for label, why in cmp.skipped.items()) + "."]
    if cmp.only_baseline:
        lines += ["", f"Only in the baseline (not compared): {', '.join(md_escape(n) for n in cmp.only_baseline)}."]
    if cmp.only_current:
        lines += ["", f"Only in the current run (not compared): {', '.join(md_escape(n) for n in cmp.only_current)}."]
    lines += ["", f"![Comparison]({chart})", ""]
    return "\n".join(lines)


def run_compare(base_dir: Path, cur_dir: Path, tol: Tolerances, out_dir: Path | None) -> tuple[int, str]:
    baseline = load_run(base_dir, with_history=False)  # summary.json (when present) says how each run was loaded
    current = load_run(cur_dir, with_history=False)
    out = Path(out_dir) if out_dir is not None else current.folder
    out.mkdir(parents=True, exist_ok=True)
    cmp = compare_runs(baseline, current, tol)
    chart = "chart_compare.png"
    result_charts.save(result_charts.compare_figure(cmp, METRICS), out / chart)
    (out / COMPARE_MD).write_text(compare_markdown(baseline, current, cmp, chart), encoding="utf-8")
    text = [f"Baseline {baseline.run_id} -> current {current.run_id}"]
    if cmp.differences:
        text.append(comparability_text(cmp))
    text += [f"Tolerances: {tolerance_text(tol)}", "", text_table(compare_headers(), compare_rows(cmp, marks=False), text_columns=(0, -1))]
    if cmp.skipped:
        text.append(f"{len(cmp.skipped)} request(s) not judged: too few requests (see the Judged column)")
    if cmp.only_baseline:
        text.append(f"Only in the baseline (not compared): {', '.join(cmp.only_baseline)}")
    if cmp.only_current:
        text.append(f"Only in the current run (not compared): {', '.join(cmp.only_current)}")
    text.append(f"{len(cmp.regressions)} regression(s) beyond tolerance" if cmp.regressions
                else "Nothing judged: every request had too few samples (see --min-samples)" if not cmp.verdicts
                else "No regression beyond tolerance")
    text.append(f"Wrote {out / COMPARE_MD} and {out / chart}")
    return (1 if cmp.regressions else 0), "\n".join(text)
