"""Read every run folder under a results root, in time order, and group the runs that measured the same thing.

A run folder is one with a summary.json (run_tests.sh's results/<timestamp>/, or the history branch's
runs/<run id>/). Runs that did not measure (Locust died, bad configuration, a second Ctrl-C) are listed as not
used. Runs differing in anything comparable.FIELDS names, or in duration beyond its slack, go to separate
groups: a run stopped early by one Ctrl-C measured, and its shorter duration keeps it apart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..reporting import comparable
from ..reporting.results import SUMMARY_JSON, InputError
from .metrics import Values, add_capacity, summary_values

CAPACITY_JSON = "capacity.json"
MAX_RUNS = 1000  # the newest runs read (about 20 years of a weekly job); older folders are counted, not read
MAX_FOLDERS = 20_000  # folders looked at under the root at most: the listing itself is bounded
MEASURED_EXIT_CODES = (0, 1)  # the run measured and judged; 2-5 and 130 mean it did not measure properly


@dataclass
class HistoryRun:
    """One run of the history: where it is, when it started, what kind of run it was and its values."""

    run_id: str
    folder: Path
    started_at: str
    summary: dict[str, Any]
    values: Values
    notes: list[str] = field(default_factory=list)

    @property
    def date(self) -> str:
        return self.started_at[:10] or self.run_id


@dataclass
class Group:
    """Runs that are comparable with each other, in time order."""

    number: int
    description: str
    runs: list[HistoryRun]


@dataclass
class History:
    root: Path
    groups: list[Group]  # the latest run's group first, then by their newest run
    not_used: list[tuple[str, str]]  # (folder name, why)
    older_than_read: int = 0  # run folders beyond MAX_RUNS, not read

    @property
    def latest(self) -> HistoryRun | None:
        return self.groups[0].runs[-1] if self.groups else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _why_not_used(summary: dict[str, Any]) -> str | None:
    verdict = summary.get("verdict") if isinstance(summary.get("verdict"), dict) else {}
    code = verdict.get("exit_code")
    if code not in MEASURED_EXIT_CODES:
        return f"did not measure properly (exit code {code})"
    if not isinstance(summary.get("started_at"), str):
        return "no started_at in summary.json"
    return None


def read_run(folder: Path, min_samples: int) -> HistoryRun:
    """One run folder; ValueError (one line) when its summary.json cannot be used."""
    summary = _read_json(folder / SUMMARY_JSON)
    why = _why_not_used(summary)
    if why:
        raise ValueError(why)
    values = summary_values(summary, min_samples)
    run = HistoryRun(str(summary.get("run_id") or folder.name), folder, summary["started_at"], summary, values)
    capacity_path = folder / CAPACITY_JSON
    if capacity_path.exists():
        try:
            run.notes += [f"{CAPACITY_JSON}: {note}" for note in add_capacity(values, _read_json(capacity_path))]
        except ValueError as exc:
            run.notes.append(f"{CAPACITY_JSON}: {exc}; capacity not read")
    return run


def _run_folders(root: Path) -> list[Path]:
    if not root.exists():
        raise InputError(f"{root}: results root not found (pass the folder that holds the run folders, e.g. results)")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (pass the folder that holds the run folders, e.g. results)")
    folders, seen = [], set()
    for index, entry in enumerate(sorted(root.iterdir(), key=lambda p: (p.is_symlink(), p.name))):
        if index >= MAX_FOLDERS:
            break
        if entry.is_dir() and (entry / SUMMARY_JSON).is_file() and entry.resolve() not in seen:
            seen.add(entry.resolve())  # results/latest links to a folder already listed
            folders.append(entry)
    return folders


def read_history(root: Path, min_samples: int) -> History:
    """Every usable run under root (the newest MAX_RUNS), grouped; InputError when there is none."""
    root = Path(root)
    runs, not_used = [], []
    for folder in _run_folders(root):
        try:
            runs.append(read_run(folder, min_samples))
        except ValueError as exc:
            not_used.append((folder.name, str(exc)))
    if not runs:
        why = f" ({len(not_used)} not usable: {not_used[0][0]}: {not_used[0][1]})" if not_used else ""
        raise InputError(f"{root}: no run folder with a usable summary.json{why}; run ./run_tests.sh headless first")
    runs.sort(key=lambda run: (run.started_at, run.run_id))
    older = max(0, len(runs) - MAX_RUNS)
    return History(root, group_runs(runs[older:]), not_used, older)


def group_runs(runs: list[HistoryRun]) -> list[Group]:
    """Comparable runs together: the same comparable.key and a duration within the slack of the group's first."""
    groups: list[Group] = []
    keys: list[tuple] = []
    for run in runs:
        key, length = comparable.key(run.summary), comparable.duration(run.summary)
        for group, group_key in zip(groups, keys):
            if group_key == key and comparable.same_length(comparable.duration(group.runs[0].summary), length):
                group.runs.append(run)
                break
        else:
            groups.append(Group(0, comparable.describe(run.summary), [run]))
            keys.append(key)
    groups.sort(key=lambda g: (g.runs[-1].started_at, g.runs[-1].run_id), reverse=True)
    for number, group in enumerate(groups, start=1):
        group.number = number
    return groups
