"""The trend of each comparable group: every metric's series over its runs, its change points, and the verdict.

The verdict is on the latest run: it regressed when, in its own group, a metric's last change point started
within the last `recent` runs (so the latest run is on the new level) and moved the metric the wrong way by
more than the tolerance, judged by the same rule as run-vs-run comparison (compare.judge) on the medians of
the runs before and after the change.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..reporting.compare import Tolerances, judge
from . import changepoints
from .metrics import METRICS, TOTAL, Metric
from .runs import Group, History

RECENT = 3  # a change that started within the last 3 runs is about the latest run


@dataclass(frozen=True)
class Settings:
    tolerances: Tolerances = Tolerances()
    recent: int = RECENT
    alpha: float = changepoints.ALPHA
    min_segment: int = changepoints.MIN_SEGMENT


@dataclass(frozen=True)
class SeriesChange:
    """A change point of one series: the run where the new level starts, the medians either side, the judgement."""

    position: int  # index in the group's runs of the first run on the new level
    run_id: str
    before: float
    after: float
    p_value: float
    worse: bool
    regressed: bool  # worse beyond the tolerance
    improved: bool  # better beyond the tolerance
    current: bool  # the series' last change, started within the last `recent` runs: the latest run is on it

    @property
    def change_pct(self) -> float | None:
        return None if self.before == 0 else 100.0 * (self.after - self.before) / self.before


@dataclass(frozen=True)
class Watch:
    """The latest run alone is worse than every run of its level, beyond the tolerance: too soon to call it a
    change (a change needs MIN_SEGMENT runs on its new level), so it is named, not judged."""

    level: float  # median of the runs since the last change, the latest one left out
    runs: int  # how many runs that level has
    latest: float


@dataclass
class Series:
    key: tuple[str, str]
    label: str
    metric: Metric
    positions: list[int]  # the group's runs that have a value
    values: list[float]
    changes: list[SeriesChange] = field(default_factory=list)
    watch: Watch | None = None


@dataclass
class GroupTrend:
    group: Group
    series: list[Series]
    settings: Settings

    @property
    def changes(self) -> list[tuple[Series, SeriesChange]]:
        return [(s, c) for s in self.series for c in s.changes]

    @property
    def regressions(self) -> list[tuple[Series, SeriesChange]]:
        return [(s, c) for s, c in self.changes if c.current and c.regressed]

    @property
    def watches(self) -> list[Series]:
        return [s for s in self.series if s.watch is not None]

    @property
    def judgeable(self) -> bool:
        return len(self.group.runs) >= 2 * self.settings.min_segment


@dataclass
class Trend:
    history: History
    groups: list[GroupTrend]
    settings: Settings

    @property
    def judged(self) -> GroupTrend:
        return self.groups[0]  # the latest run's group

    @property
    def regressions(self) -> list[tuple[Series, SeriesChange]]:
        return self.judged.regressions


def judge_change(metric: Metric, before: float, after: float, tol: Tolerances) -> tuple[bool, bool]:
    """(regressed, improved) for a move from `before` to `after`; oracle violations: any rise is a regression."""
    if metric.judged_as == "count":
        return after > before, after < before
    verdict = judge(metric.judged_as, before, after, tol)
    return verdict.regressed, verdict.improved


def labels(group: Group) -> dict[tuple[str, str], str]:
    """Request labels as every table shows them: 'METHOD name' only for a name used with several methods."""
    keys = {key for run in group.runs for key in run.values if key != TOTAL}
    names = [name for _, name in keys]
    duplicated = {name for name in names if names.count(name) > 1}
    out = {key: (f"{key[0]} {key[1]}" if key[1] in duplicated and key[0] else key[1]) for key in keys}
    out[TOTAL] = "Total"
    return out


def _series(group: Group, key: tuple[str, str], label: str, metric: Metric, settings: Settings) -> Series | None:
    points = [(i, run.values[key][metric.key]) for i, run in enumerate(group.runs)
              if metric.key in run.values.get(key, {})]
    if not points:
        return None
    series = Series(key, label, metric, [i for i, _ in points], [v for _, v in points])
    found = changepoints.find_changes([metric.detection_value(v) for v in series.values], floor=metric.floor,
                                      min_segment=settings.min_segment, alpha=settings.alpha)
    raw = np.asarray(series.values)
    bounds = [0, *(c.index for c in found), len(raw)]
    last_run = len(group.runs) - 1
    for n, change in enumerate(found, start=1):
        before = float(np.median(raw[bounds[n - 1]:bounds[n]]))
        after = float(np.median(raw[bounds[n]:bounds[n + 1]]))
        position = series.positions[change.index]
        worse = (after > before) == metric.higher_is_worse and after != before
        regressed, improved = judge_change(metric, before, after, settings.tolerances)
        current = n == len(found) and position > last_run - settings.recent and series.positions[-1] == last_run
        series.changes.append(SeriesChange(position, group.runs[position].run_id, before, after, change.p_value,
                                           worse, regressed, improved, current))
    series.watch = _watch(series, raw, bounds[-2], last_run, settings)
    return series


def _watch(series: Series, raw: np.ndarray, level_start: int, last_run: int, settings: Settings) -> Watch | None:
    if series.positions[-1] != last_run or any(c.current for c in series.changes):
        return None
    level, latest = raw[level_start:-1], float(raw[-1])
    if len(level) < 2 * settings.min_segment:
        return None
    beyond = latest > level.max() if series.metric.higher_is_worse else latest < level.min()
    regressed, _ = judge_change(series.metric, float(np.median(level)), latest, settings.tolerances)
    return Watch(float(np.median(level)), len(level), latest) if beyond and regressed else None


def group_trend(group: Group, settings: Settings) -> GroupTrend:
    names = labels(group)
    keys = [TOTAL, *sorted((k for k in names if k != TOTAL), key=lambda k: (k[1], k[0]))]
    series = []
    for key in keys:
        for metric in METRICS:
            if metric.whole_run and key != TOTAL:
                continue
            found = _series(group, key, names[key], metric, settings)
            if found is not None:
                series.append(found)
    return GroupTrend(group, series, settings)


def build_trend(history: History, settings: Settings) -> Trend:
    return Trend(history, [group_trend(group, settings) for group in history.groups], settings)
