"""Change points in one metric over a run history: ruptures' PELT proposes them, significance tests keep the real ones.

PELT (ruptures: the exact search for the segmentation with the least squared error plus a penalty per change)
runs on the series scaled by a robust estimate of its run-to-run noise (the median absolute difference of
neighbours, which a step or a slow drift hardly moves), so one penalty fits a quiet metric and a noisy one.
ruptures has no significance test, so each proposed change is then tested as Apache Otava does: the runs
between the neighbouring change points on either side are compared, the least significant change is merged
away and the test repeated until every change left has p <= ALPHA (Otava's default, 0.001).

The test is the two-sided Mann-Whitney U test (scipy, which ruptures brings), as Chromium's performance
dashboard uses: a single wild run (a noisy CI machine) moves ranks by one, so it never makes a change, where
a t-test called one 2x run at the end a change in 43% of histories (bench/history.py). A rank test alone
cannot confirm a short level, though (10 runs, then 2: its smallest p-value is 0.03), so when the two sides
do not overlap at all, Student's t-test on the values (the caller passes logarithms of latencies and rates)
decides instead: no overlap leaves no doubt a rank could add, only too few runs to show it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import ruptures
from scipy.stats import mannwhitneyu, ttest_ind

MIN_SEGMENT = 2  # runs on each side of a change: with one, nothing tells a change from an odd run
ALPHA = 0.001  # the largest p-value of a change that is kept (Otava's default)
PENALTY = 5.0  # per change, times log(runs), in noise variances (BIC uses 2: 3x the false alarms, bench/README.md)
NORMAL_MAD = 0.6744897501960817  # the MAD of a standard normal: MAD / this estimates sigma
MAX_POINTS = 5000  # PELT is quadratic in the worst case: only the newest points of a longer history are searched


@dataclass(frozen=True)
class Change:
    """A change that starts at position `index` of the series (the first run of the new level)."""

    index: int
    before: float  # median of the segment before the change (in the series' own units)
    after: float  # median of the segment from the change to the next one (or the end)
    p_value: float


def noise_scale(values: np.ndarray, floor: float) -> float:
    """Run-to-run noise as a standard deviation, from neighbours' differences (robust to steps and outliers)."""
    if len(values) < 3:
        return floor
    diffs = np.abs(np.diff(values))
    sigma = float(np.median(diffs)) / NORMAL_MAD / math.sqrt(2.0)
    return max(sigma, floor)


def find_changes(values: Sequence[float], *, floor: float, min_segment: int = MIN_SEGMENT, alpha: float = ALPHA,
                 penalty: float = PENALTY) -> list[Change]:
    """The significant changes of a series of finite numbers in run order (detection on the values as given:
    pass logarithms for latencies and rates). `floor` is the smallest noise worth calling noise, in the
    series' units: a series flatter than that is scaled by the floor, so a constant series has no change."""
    x = np.asarray(values, dtype=float)
    offset = max(0, len(x) - MAX_POINTS)
    x = x[offset:]
    if len(x) < 2 * min_segment or not np.all(np.isfinite(x)):
        return []
    scale = noise_scale(x, floor)
    z = (x - float(np.median(x))) / scale
    # PELT on the squared-error cost, in ruptures' C implementation (KernelCPD with the linear kernel: the same
    # segmentation as Pelt(model="l2"), 20 ms instead of 30 s for 2000 runs; bench/history.py).
    detector = ruptures.KernelCPD(kernel="linear", min_size=min_segment, jump=1).fit(z)
    bounds = [0, *(int(b) for b in detector.predict(pen=penalty * math.log(len(x))))]  # ends with len(x)
    tested = _merge_until_significant(x, bounds, alpha)
    return [Change(index=offset + b, before=float(np.median(x[a:b])), after=float(np.median(x[b:c])), p_value=p)
            for (a, b, c), p in tested]


def _merge_until_significant(x: np.ndarray, bounds: list[int], alpha: float) -> list[tuple[tuple[int, int, int], float]]:
    """Drop the least significant inner bound until every one left has p <= alpha (at most len(bounds) rounds)."""
    for _ in range(len(bounds)):
        triples = [(bounds[i - 1], bounds[i], bounds[i + 1]) for i in range(1, len(bounds) - 1)]
        if not triples:
            return []
        scored = [(t, _p_value(x[t[0]:t[1]], x[t[1]:t[2]])) for t in triples]
        worst = max(range(len(scored)), key=lambda i: scored[i][1])
        if scored[worst][1] <= alpha:
            return scored
        del bounds[worst + 1]
    return []


EXACT_BELOW = 8  # a side this short gets the exact distribution of U (scipy's normal approximation, which it
# uses whenever there are ties, is poor for so few runs)


def _p_value(before: np.ndarray, after: np.ndarray) -> float:
    if np.ptp(np.concatenate([before, after])) == 0:
        return 1.0  # all equal: nothing changed (and the tests are undefined)
    method = "exact" if min(len(before), len(after)) < EXACT_BELOW else "asymptotic"
    p = float(mannwhitneyu(before, after, alternative="two-sided", method=method).pvalue)
    if after.min() > before.max() or after.max() < before.min():  # no overlap: the t-test says how sure
        with warnings.catch_warnings():  # near-equal runs on one side: scipy warns, the p-value is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            t = float(ttest_ind(before, after, equal_var=True).pvalue)  # pooled: two runs say little of their spread
        p = min(p, 1.0 if np.isnan(t) else t)
    return p
