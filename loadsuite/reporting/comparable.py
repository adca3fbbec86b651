"""What makes two runs comparable: the same load (users, shape, duration), target, client, user classes and suite.

One home for the rule: run-vs-run comparison (compare.py) warns when two runs differ in these, and the run
history (loadsuite/history) keeps runs that differ in them in separate groups.
"""
from __future__ import annotations

from typing import Any, Callable

DURATION_SLACK = 0.2  # durations within 20% of each other count as the same length
BUNDLED = "the bundled reference service"  # every run_tests.sh run without a host starts one on a new port


def peak_users(summary: dict[str, Any]):
    users = summary.get("users")
    return users.get("peak") if isinstance(users, dict) else users


def target(summary: dict[str, Any]):
    """The host, except that every bundled reference service is the same target whatever its port."""
    return BUNDLED if summary.get("bundled_service") is True else summary.get("host")


# (what, how to read it from summary.json): runs that differ in any of these did not measure the same thing.
FIELDS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("peak users", peak_users),
    ("shape", lambda s: s.get("shape")),
    ("host", target),
    ("client", lambda s: s.get("client")),
    ("user classes", lambda s: ", ".join(s.get("user_classes") or []) or None),
    ("suite version", lambda s: s.get("suite_version")),
)


def key(summary: dict[str, Any]) -> tuple:
    """Everything but the duration (which is compared with a slack): equal keys, same kind of run."""
    return tuple(_hashable(get(summary)) for _, get in FIELDS)


def _hashable(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def duration(summary: dict[str, Any]) -> float | None:
    value = summary.get("duration_s")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def same_length(a: float | None, b: float | None) -> bool:
    """Durations within DURATION_SLACK of the longer one (an unknown duration matches only another unknown one)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= DURATION_SLACK * max(a, b)


def differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each way the two summaries' runs differ, as 'what baseline vs current'; empty when they are comparable."""
    out = [f"{what} {get(baseline)} vs {get(current)}" for what, get in FIELDS if get(baseline) != get(current)]
    db, dc = duration(baseline), duration(current)
    if db is not None and dc is not None and not same_length(db, dc):
        out.append(f"duration {db:g} s vs {dc:g} s")
    return out


def describe(summary: dict[str, Any]) -> str:
    """One line naming the kind of run: '20 users, no shape, host X, client fast, ..., 300 s'."""
    parts = []
    for what, get in FIELDS:
        value = get(summary)
        if what == "peak users":
            parts.append(f"{value} users" if value is not None else "users unknown")
        elif what == "shape":
            parts.append(f"shape {value}" if value else "no shape")
        elif what == "host":
            parts.append(value if value == BUNDLED else f"host {value}")
        else:
            parts.append(f"{what} {value if value is not None else 'not recorded'}")
    length = duration(summary)
    parts.append(f"about {length:.0f} s" if length is not None else "duration unknown")
    return ", ".join(parts)
