"""`python -m loadsuite.cli.aftermath RESULTS LOCUST_EXIT_CODE`: the run's exit code, and a verdict even when Locust left none.

run_tests.sh calls it once Locust has ended. When summary.json is there, Locust's code stands. When it is
not (Locust was killed, crashed, or could not write), this writes a summary.json and junit.xml that say
so, and the exit code is 5 ("Locust died"); when even those cannot be written, 4 ("results could not be
written"). Exit codes are documented in `./run_tests.sh --help` and the README.
"""
from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..reporting import junit, verdict

EXIT_UNWRITABLE = 4
EXIT_LOCUST_DIED = 5


def how_it_ended(code: int) -> str:
    if code > 128 and code - 128 in signal.valid_signals():
        return f"Locust was killed by {signal.Signals(code - 128).name} (exit {code})"
    return f"Locust ended with exit code {code} without writing a verdict"


def salvage_summary(folder: Path, code: int) -> dict:
    """What CI needs when Locust left nothing: a failed verdict that names how the run ended."""
    why = how_it_ended(code)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    totals = last_written_totals(folder)
    known = ("the last statistics Locust wrote (at most a second old) are in totals" if totals
             else "no statistics were saved; the run's numbers are unknown")
    return {"run_id": folder.name, "ended_at": now, "duration_s": None, "load_s": None, "interrupted": True,
            "locust_died": why, "totals": totals or {"requests": None, "failures": None}, "thresholds": [],
            "consistency": {"enabled": False, "passed": None},
            "verdict": {"passed": False, "exit_code": EXIT_LOCUST_DIED, "reasons": [f"FAIL: {why}: {known}"]}}


def last_written_totals(folder: Path) -> dict | None:
    """The Aggregated row of stats_stats.csv, which Locust rewrites every second, or None."""
    import csv
    try:
        with open(folder / "stats_stats.csv", newline="", encoding="utf-8") as handle:
            row = next((r for r in csv.DictReader(handle) if r.get("Name") == "Aggregated"), None)
        return None if row is None else {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"])}
    except (OSError, ValueError, KeyError):
        return None


def write_junit_for_death(folder: Path, summary: dict) -> None:
    """One failed test case naming how Locust ended (verdict.write_junit has nothing to list without thresholds)."""
    junit.write(folder, "load test " + summary["run_id"],
                [junit.Case("run", "locust", failure=summary["verdict"]["reasons"][0])])


def main(argv: list[str]) -> int:
    folder, code = Path(argv[0]), int(argv[1])
    try:
        json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    else:
        if code in (0, 1, EXIT_UNWRITABLE):
            return code  # Locust wrote its verdict and exited with it
        print(f"run_tests.sh: {how_it_ended(code)} after writing summary.json (exit code {EXIT_LOCUST_DIED})",
              file=sys.stderr)
        return EXIT_LOCUST_DIED
    if code in (2, EXIT_UNWRITABLE):
        return code  # refused before any traffic, or the suite already said its results could not be written
    summary = salvage_summary(folder, code)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        verdict.write_summary(folder, summary)
        write_junit_for_death(folder, summary)
    except OSError as error:
        print(f"run_tests.sh: results could not be written ({error.strerror or error}): free space or fix "
              f"permissions in {folder} (exit code {EXIT_UNWRITABLE})", file=sys.stderr)
        return EXIT_UNWRITABLE
    print(f"run_tests.sh: {how_it_ended(code)}: summary.json and junit.xml say so (exit code {EXIT_LOCUST_DIED})",
          file=sys.stderr)
    return EXIT_LOCUST_DIED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
