"""`python -m loadsuite.cli.verdict RESULTS_DIR [--exit-code N]`: print the run's verdict block from its summary.json.

run_tests.sh calls it after Locust has exited, because Locust prints its ~90-line final stats table as
it shuts down, after every listener of ours: so the verdict is the last thing on screen. Colour on a
terminal (not with NO_COLOR; FORCE_COLOR forces it), plain otherwise.
Exit codes: 0 printed, 2 no readable summary.json (one line on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..reporting.console import use_colour, verdict_block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadsuite.cli.verdict",
                                     description="Print a run's verdict block from RESULTS_DIR/summary.json.")
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--exit-code", type=int, default=None,
                        help="the code the run exits with (run_tests.sh's own): the verdict line shows it")
    args = parser.parse_args(argv)
    path = args.results_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"verdict: no verdict: cannot read {path} ({error.__class__.__name__}): the run ended before "
              "its reports were written", file=sys.stderr)
        return 2
    if not isinstance(summary, dict):
        print(f"verdict: {path}: expected a JSON object", file=sys.stderr)
        return 2
    verdict = summary.get("verdict") if isinstance(summary.get("verdict"), dict) else {}
    if args.exit_code is not None and verdict.get("exit_code") != args.exit_code:
        # The last line says the code the run really exits with (a write error, Locust's death), never another.
        summary = {**summary, "verdict": {**verdict, "exit_code": args.exit_code}}
    print(verdict_block(summary, args.results_dir, use_colour(sys.stdout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
