"""The run history: every run folder under a results root, grouped by what is comparable, its change points
(ruptures) and the verdict on the latest run; `analyze_results.py --history RESULTS_ROOT` is its front door."""
from __future__ import annotations

from pathlib import Path

HISTORY_DIR = "history"  # the default output folder, inside the results root (it holds no summary.json)


def run_history(root: Path, settings, out: Path | None, with_charts: bool = True) -> tuple[int, str]:
    """Read, judge and write the trend report; (exit code, console text). InputError on a bad root."""
    from .report import write_report
    from .runs import read_history
    from .trend import build_trend

    history = read_history(root, settings.tolerances.min_samples)
    trend = build_trend(history, settings)
    return write_report(trend, Path(out) if out is not None else Path(root) / HISTORY_DIR, with_charts)
