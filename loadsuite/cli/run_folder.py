"""`python -m loadsuite.cli.run_folder RESULTS_ROOT STAMP`: make this run's own folder and point `latest` at it.

run_tests.sh calls it once per run, after the health check: the folder's path on stdout, or one line on stderr
and exit code 4 ("results could not be written"), before any traffic. reporting/folders.py says how two runs
never share a folder and how `latest` always ends up naming the newest.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..reporting.folders import FolderError, start_run

EXIT_UNWRITABLE = 4


def main(argv: list[str]) -> int:
    root, stamp = Path(argv[0]), argv[1]
    try:
        folder = start_run(root, stamp)
    except FolderError as error:
        print(f"run_tests.sh: results could not be written: {error} (exit code {EXIT_UNWRITABLE})", file=sys.stderr)
        return EXIT_UNWRITABLE
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
