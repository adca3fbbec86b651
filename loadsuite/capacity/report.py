"""The search's figures and answer: each step judged (pass, fail, or generator-limited), the answer in one dict
(capacity.json, summary.json's "capacity"), steps.csv, and the same answer as console lines and junit cases."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from locust.runners import CPU_WARNING_THRESHOLD

from ..reporting import junit
from ..reporting.console import terminal_safe
from .search import Next, Search

CAPACITY_JSON, STEPS_CSV = "capacity.json", "steps.csv"
ADD_WORKERS = "the load generator was the limit: add workers (--workers N / distributed)"
FACTOR_ORDER = ("consistency", "errors", "latency")  # the first found names the limiting factor
STEP_COLUMNS = ("index", "kind", "offered_rps", "achieved_rps", "achieved_ratio", "requests", "p50_ms", "p95_ms",
                "p99_ms", "error_rate", "oracle", "violations", "dropped", "started", "late_p99_ms", "cpu_percent",
                "outcome", "limiting_factor", "failed", "generator", "plateau_s", "elapsed_s")


def _factor(reason: str) -> str:
    """Which kind of limit a verdict reason names (thresholds, windows, the oracle, the achieved rate)."""
    if "consistency" in reason:
        return "consistency"
    if "error_rate" in reason:
        return "errors"
    return "latency"


def _oracle_word(consistency: dict[str, Any]) -> str:
    if not consistency.get("enabled"):
        return "off"
    return {True: "pass", False: "FAIL"}.get(consistency.get("passed"), "inconclusive")


def step_figures(step: Next, summary: dict[str, Any], *, plateau_s: float, answered: int, dropped: int,
                 started: int, late_p99_ms: float | None, cpu_percent: float, config, elapsed_s: float) -> dict:
    """One step as judged: the run's verdict on the plateau, the achieved rate, and whether the generator kept up."""
    totals, consistency = summary.get("totals") or {}, summary.get("consistency") or {}
    achieved = answered / plateau_s if plateau_s > 0 else 0.0
    ratio = achieved / step.rate if step.rate else 0.0
    failed = [str(reason) for reason in (summary.get("verdict") or {}).get("reasons") or []]
    service_failed = bool(failed)
    if ratio < config.min_achieved_ratio:
        failed.append(f"FAIL: achieved rate: {achieved:.1f} of {step.rate:g} req/s answered in the plateau "
                      f"({ratio:.0%}, capacity.min_achieved_ratio {config.min_achieved_ratio:g}): the rest queued")
    generator = []
    if cpu_percent > CPU_WARNING_THRESHOLD:
        generator.append(f"Locust's CPU at {cpu_percent:.0f}% (Locust warns above {CPU_WARNING_THRESHOLD}%)")
    if late_p99_ms is not None and late_p99_ms > config.max_late_p99_ms:
        generator.append(f"starts late: p99 {late_p99_ms:g} ms (capacity.max_late_p99_ms {config.max_late_p99_ms:g})")
    if dropped and not service_failed:  # with the service failing, its backlog filled the bound
        generator.append(f"{dropped} starts dropped at load_shape.max_in_flight")
    outcome = "generator" if generator else "fail" if failed else "pass"
    factors = {_factor(reason) for reason in failed}
    return {
        "index": 0, "kind": step.kind, "offered_rps": step.rate, "achieved_rps": round(achieved, 2),
        "achieved_ratio": round(ratio, 4), "requests": totals.get("requests", 0), "p50_ms": totals.get("p50_ms"),
        "p95_ms": totals.get("p95_ms"), "p99_ms": totals.get("p99_ms"), "error_rate": totals.get("error_rate"),
        "oracle": _oracle_word(consistency), "violations": consistency.get("violations_total") or 0,
        "dropped": dropped, "started": started, "late_p99_ms": late_p99_ms, "cpu_percent": round(cpu_percent, 1),
        "outcome": outcome,
        "limiting_factor": "generator" if generator else next((f for f in FACTOR_ORDER if f in factors), None),
        "failed": failed, "generator": generator, "plateau_s": round(plateau_s, 2), "elapsed_s": round(elapsed_s, 2),
    }


def _ms(value) -> str:
    return "-" if value is None else f"{value:g} ms"


def step_line(figures: dict) -> str:
    """One console line per step as it ends."""
    word = {"pass": "pass", "fail": "FAIL", "generator": "generator-limited"}[figures["outcome"]]
    why = (figures["generator"] or figures["failed"] or [""])[0]
    return terminal_safe(
        f"capacity {figures['kind']} {figures['offered_rps']:g} req/s: {word}: achieved {figures['achieved_rps']:g}, "
        f"p95 {_ms(figures['p95_ms'])}, p99 {_ms(figures['p99_ms'])}, errors {figures['error_rate'] or 0:.2%}, "
        f"oracle {figures['oracle']}" + (f" ({why})" if why else ""))


def answer(search: Search, steps: list[dict], config, thresholds, *, require_rps: float | None, elapsed_s: float,
           interrupted: bool, current: Next | None) -> dict[str, Any]:
    """The search's answer: what is proven, where it failed first and why, and every step."""
    for index, step in enumerate(steps, 1):
        step["index"] = index
    confirmed = search.confirmed
    proof = next((s for s in reversed(steps) if s["kind"] == "confirm" and s["outcome"] == "pass"
                  and s["offered_rps"] == confirmed), None)
    failures = sorted((s for s in steps if s["outcome"] == "fail"), key=lambda s: (s["offered_rps"], s["index"]))
    first = failures[0] if failures else None
    generator_at = search.generator_limited_at
    limited = [s for s in steps if s["outcome"] == "generator"]
    at_least = confirmed is not None and (generator_at is not None or confirmed >= config.max_rps) and (
        first is None or first["offered_rps"] > confirmed * (1 + config.tolerance) or generator_at is not None)
    if first is not None:
        factor = first["limiting_factor"]
    elif generator_at is not None:
        factor = "generator"
    else:
        factor = None
    if confirmed is not None and generator_at is not None:
        message = f"at least {confirmed:g} req/s; {ADD_WORKERS}"
    elif confirmed is not None and at_least:
        message = f"at least {confirmed:g} req/s: capacity.max_rps {config.max_rps:g} passed (raise it to search higher)"
    elif confirmed is not None:
        message = f"capacity {confirmed:g} req/s, proven for {config.confirm_seconds:g} s"
        if first is not None:
            message += f"; first failing rate {first['offered_rps']:g} req/s ({first['limiting_factor']})"
    else:
        lo = search.lo
        message = "no rate proven" + (f" (highest passing step {lo:g} req/s, not confirmed)" if lo is not None else "")
        if generator_at is not None:
            message += f"; {ADD_WORKERS}"
    reasons = []
    if confirmed is None:
        reasons.append(f"FAIL: capacity: {message}: {search.done_because or 'the search did not finish'}")
    elif require_rps is not None and confirmed < require_rps:
        reasons.append(f"FAIL: capacity: proven {confirmed:g} req/s is below --require-capacity {require_rps:g}")
    return {
        "capacity_rps": confirmed,
        "at_least": bool(at_least),
        "generator_limited": generator_at is not None,
        "message": message,
        "limiting_factor": factor,
        "at_capacity": None if proof is None else {key: proof[key] for key in (
            "offered_rps", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "error_rate", "oracle", "violations",
            "requests")},
        "first_failure": None if first is None else {
            "offered_rps": first["offered_rps"], "kind": first["kind"], "limiting_factor": first["limiting_factor"],
            "failed": first["failed"], "p95_ms": first["p95_ms"], "p99_ms": first["p99_ms"],
            "error_rate": first["error_rate"], "oracle": first["oracle"]},
        "generator_limited_at": None if not limited else {"offered_rps": limited[0]["offered_rps"],
                                                          "why": limited[0]["generator"]},
        "highest_passing_step_rps": search.lo,
        "require_capacity_rps": require_rps,
        "limits": {key: getattr(thresholds, key, None) for key in ("p95_ms", "p99_ms", "error_rate")},
        "search": {"budget_s": config.time_budget_seconds, "elapsed_s": round(elapsed_s, 2),
                   "stopped_because": search.done_because, "interrupted": interrupted,
                   "interrupted_step": None if current is None or not interrupted else
                   {"offered_rps": current.rate, "kind": current.kind},
                   "steps_run": len(steps), "knobs": config.model_dump()},
        "steps": steps,
        "verdict": {"passed": not reasons, "exit_code": 0 if not reasons else 1, "reasons": reasons},
    }


def write_files(folder: Path, result: dict[str, Any]) -> None:
    """capacity.json and steps.csv, each replaced whole (a reader never sees half a file)."""
    from ..reporting.verdict import json_safe
    from ..runtime.end_of_run import csv_cell
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _replace(folder / CAPACITY_JSON, json.dumps(json_safe(result), indent=2, allow_nan=False))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(STEP_COLUMNS)
    for step in result["steps"]:
        writer.writerow([csv_cell("; ".join(step[c]) if isinstance(step[c], list) else
                                  "" if step[c] is None else step[c]) for c in STEP_COLUMNS])
    _replace(folder / STEPS_CSV, buffer.getvalue())


def _replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def console_lines(result: dict[str, Any]) -> list[str]:
    """The answer for the verdict block (terminal-safe)."""
    lines = [f"capacity: {result['message']}"]
    at = result.get("at_capacity")
    if at:
        lines.append(f"  at {at['offered_rps']:g} req/s: achieved {at['achieved_rps']:g}, p95 {_ms(at['p95_ms'])}, "
                     f"p99 {_ms(at['p99_ms'])}, errors {at['error_rate'] or 0:.2%}, oracle {at['oracle']}")
    first = result.get("first_failure")
    if first:
        lines.append(f"  first failing rate {first['offered_rps']:g} req/s ({first['limiting_factor']}): "
                     + "; ".join(reason.removeprefix("FAIL: ") for reason in first["failed"][:3]))
    if result.get("generator_limited_at"):
        limited = result["generator_limited_at"]
        lines.append(f"  generator-limited at {limited['offered_rps']:g} req/s: " + "; ".join(limited["why"]))
    search = result["search"]
    lines.append(f"  search: {search['steps_run']} steps in {search['elapsed_s']:g} s of {search['budget_s']:g} s; "
                 f"{search['stopped_because'] or 'not finished'}")
    return [terminal_safe(line) for line in lines]


def junit_cases(result: dict[str, Any]) -> list[junit.Case]:
    """One case for the answer (failed when nothing is proven or below --require-capacity), one per step."""
    reasons = result["verdict"]["reasons"]
    cases = [junit.Case("capacity", "capacity", failure=reasons[0] if reasons else None,
                        details="\n".join(console_lines(result)))]
    for step in result["steps"]:
        name = f"step {step['index']} {step['kind']} {step['offered_rps']:g} req/s"
        if step["outcome"] == "generator":
            cases.append(junit.Case("capacity.steps", name, skipped="generator-limited: " + "; ".join(step["generator"])))
        elif step["outcome"] == "fail":  # a failing step is how the search finds the limit: reported, not a failure
            cases.append(junit.Case("capacity.steps", name, skipped="above capacity: " + "; ".join(step["failed"])))
        else:
            cases.append(junit.Case("capacity.steps", name))
    return cases
