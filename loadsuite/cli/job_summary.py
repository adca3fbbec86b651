"""`python -m loadsuite.cli.job_summary RUN_DIR [--artifact NAME]`: summary.md (and compare.md) for a CI job summary.

GitHub's job summary cannot show a run folder's relative `![title](chart_x.png)` images (they render as
broken images), so every image becomes a line naming the chart and the artifact that holds it; the tables
stay as they are. Exit codes: 0 printed, 2 no summary.md in RUN_DIR.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def without_images(markdown: str, artifact: str) -> str:
    """Relative image links replaced by 'title: `file` in the artifact NAME'; absolute URLs are left alone."""
    def replace(match: re.Match) -> str:
        title, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+://", target):
            return match.group(0)
        return f"{title or 'chart'}: `{target}` in the `{artifact}` artifact of this run"
    return IMAGE.sub(replace, markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadsuite.cli.job_summary", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--artifact", default="performance-results", help="the artifact the charts are uploaded in")
    args = parser.parse_args(argv)
    summary = args.run_dir / "summary.md"
    if not summary.is_file():
        print(f"job_summary: {summary}: not found (the run produced no summary)", file=sys.stderr)
        return 2
    parts = [summary.read_text(encoding="utf-8")]
    compare = args.run_dir / "compare.md"
    if compare.is_file():
        parts.append(compare.read_text(encoding="utf-8"))
    print("\n\n".join(without_images(part, args.artifact).rstrip() for part in parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
