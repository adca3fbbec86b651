"""The verdict block printed at the end of every run: thresholds (limit and observed), the oracle's counts,
where the results are, and the verdict as the last line; colour on a terminal, plain otherwise."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, TextIO

from ..oracle.checks import counts_text
from .format import fmt_metric

GREEN, RED, YELLOW, BOLD, RESET = "\033[32m", "\033[31m", "\033[33m", "\033[1m", "\033[0m"
RESULT_FILES = ("summary.md", "report.html", "junit.xml", "summary.json")
ORACLE_WORDS = {"products_checked": "products checked", "inconclusive": "inconclusive",
                "violations_total": "violations", "dropped_records": "records dropped"}
SKIP_ORACLE_KEYS = {"enabled", "passed", "reason"}
# What a terminal would act on rather than show: C0 controls (ESC starts a colour or a screen clear), DEL, C1
# controls (U+009B is a one-character CSI), line and paragraph separators, bidi overrides (they reorder what is
# shown), and lone surrogates (no terminal encoding can write them).
_NOT_SHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: object) -> str:
    """Text from the target as a terminal shows it: every character it would act on written out as \\xNN or
    \\uNNNN (visible, never obeyed), whatever the colour setting. One line: newlines are written out too."""
    return _NOT_SHOWN.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", str(text))


def use_colour(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty() and env.get("TERM") != "dumb"


def violation_counts(consistency: dict[str, Any]) -> dict[str, int]:
    """The complete count of violations per kind (summaries written before counts existed: the listed ones)."""
    counts = consistency.get("violation_counts")
    if isinstance(counts, dict) and counts:
        return dict(counts)
    listed: dict[str, int] = {}
    for violation in consistency.get("violations") or []:
        listed[violation["kind"]] = listed.get(violation["kind"], 0) + 1
    return listed


def consistency_counts(consistency: dict[str, Any]) -> str:
    """One line for every output: "oversell x1 (537 units), lost_update x12", or "" without violations."""
    return counts_text(violation_counts(consistency), consistency.get("violation_units") or {})


def oracle_counts(consistency: Mapping[str, Any]) -> str:
    """'12 products checked, 0 inconclusive, 0 violations, ...': every count the oracle reports."""
    counts = dict(consistency)
    if "violations_total" not in counts and isinstance(counts.get("violations"), list):
        counts["violations_total"] = len(counts["violations"])
    parts = [f"{counts[key]} {word}" for key, word in ORACLE_WORDS.items()
             if isinstance(counts.get(key), int) and not isinstance(counts.get(key), bool)]
    parts += [f"{value} {key.replace('_', ' ')}" for key, value in counts.items()
              if key not in ORACLE_WORDS and key not in SKIP_ORACLE_KEYS
              and isinstance(value, int) and not isinstance(value, bool)]
    return ", ".join(parts) or "no counts"


def inconclusive_reason(consistency: Mapping[str, Any]) -> str | None:
    """Why an enabled oracle decided nothing (None when it passed or failed): summary.json's reason, or for a summary
    written before reasons existed its notes or first undecided product. Every output shows it."""
    if not consistency.get("enabled") or consistency.get("passed") is not None:
        return None
    if consistency.get("reason"):
        return str(consistency["reason"])
    notes = [str(note) for note in consistency.get("notes") or [] if not str(note).endswith("not listed")]
    if notes:
        return "; ".join(notes)
    products = [item for item in consistency.get("inconclusive_products") or [] if isinstance(item, Mapping)]
    if products:
        return f"{products[0].get('product')}: {products[0].get('reason')}"
    return "no reason recorded"


def scenario_notes(summary: Mapping[str, Any]) -> list[str]:
    """"flash sale did not run: why": each scenario the verdict relies on that was on but did not happen (every
    output names it: the console, summary.md, junit.xml, the web tab)."""
    scenarios = summary.get("scenarios")
    notes = []
    for name, report in (scenarios.items() if isinstance(scenarios, Mapping) else ()):
        if isinstance(report, Mapping) and report.get("enabled") and not report.get("opened"):
            notes.append(f"{str(name).replace('_', ' ')} did not run: {report.get('why') or 'no reason recorded'}")
    return notes


def verdict_block(summary: Mapping[str, Any], folder: Path | str, colour: bool = False) -> str:
    """The compact block; the verdict line is the last line."""
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if colour else text

    rows = []
    for row in summary.get("thresholds") or []:
        metric = str(row.get("metric"))
        relation = ">=" if metric == "min_rps" else "<="
        rows.append((terminal_safe(f"{metric} {row.get('scope')}"), terminal_safe(f"{relation} {fmt_metric(metric, row.get('limit'))}"),
                     terminal_safe(fmt_metric(metric, row.get("observed"))), bool(row.get("passed"))))
    width = max([len("threshold"), *(len(r[0]) for r in rows)])
    lines = [paint("=== Verdict " + "=" * 60, BOLD)]
    if rows:
        lines.append(f"{'threshold':<{width}}  {'limit':>14}  {'observed':>14}  result")
        for name, limit, observed, passed in rows:
            lines.append(f"{name:<{width}}  {limit:>14}  {observed:>14}  "
                         + (paint("pass", GREEN) if passed else paint("FAIL", RED)))
    else:
        lines.append("thresholds: none configured")
    consistency = summary.get("consistency") or {}
    if consistency.get("enabled"):
        state = consistency.get("passed")
        word = {True: paint("pass", GREEN), False: paint("FAIL", RED)}.get(state, paint("inconclusive", YELLOW))
        lines.append(f"oracle: {word}: {terminal_safe(oracle_counts(consistency))}")
        why = inconclusive_reason(consistency)
        if why:
            lines.append(f"  why inconclusive: {terminal_safe(why)}")
        by_kind = consistency_counts(consistency)
        if by_kind:
            lines.append(f"  violations by kind: {terminal_safe(by_kind)}")
        order = {"oversell": 0, "conservation": 1, "negative_stock": 2, "lost_update": 3}
        violations = sorted(consistency.get("violations") or [], key=lambda v: order.get(v.get("kind"), 9))
        for violation in violations[:5]:
            lines.append("  " + terminal_safe(f"{violation.get('kind')}: {violation.get('product')}: {violation.get('message')}"))
    else:
        lines.append("oracle: disabled")
    lines += [paint(terminal_safe(note), YELLOW) for note in scenario_notes(summary)]
    if summary.get("interrupted"):
        lines.append(paint("interrupted: the numbers cover only the part that ran", YELLOW))
    present = [name for name in RESULT_FILES if (Path(folder) / name).exists()]
    lines.append(f"results: {terminal_safe(folder)}" + (f" ({', '.join(present)})" if present else ""))
    verdict = summary.get("verdict") or {}
    passed = bool(verdict.get("passed"))
    word = paint("PASS", BOLD + GREEN) if passed else paint("FAIL", BOLD + RED)
    lines.append(f"verdict: {word} (exit code {terminal_safe(verdict.get('exit_code', 1))})")
    return "\n".join(lines)
