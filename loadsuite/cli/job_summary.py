"""`python -m loadsuite.cli.job_summary RUN_DIR [--artifact NAME] [--history DIR [--image-base URL]]`: summary.md
(and compare.md, and the run history's history.md) for a CI job summary.

GitHub's job summary cannot show a run folder's relative `![title](chart_x.png)` images (they render as
broken images), so every image becomes a line naming the chart and the artifact that holds it; the tables
stay as they are. The history's charts are published on the history branch: with --image-base (their folder's
URL at the pushed commit) they become absolute images that the summary shows; its Mermaid chart renders as is.
Exit codes: 0 printed, 2 no summary.md in RUN_DIR.
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


def absolute_images(markdown: str, base: str) -> str:
    """Relative image links made absolute under `base` (a folder URL); absolute ones are left alone."""
    def replace(match: re.Match) -> str:
        title, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+://", target):
            return match.group(0)
        return f"![{title}]({base.rstrip('/')}/{target})"
    return IMAGE.sub(replace, markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadsuite.cli.job_summary", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--artifact", default="performance-results", help="the artifact the charts are uploaded in")
    parser.add_argument("--history", type=Path, help="the run history's report folder (history.md), added after the run")
    parser.add_argument("--image-base", help="the URL of the history report's folder on the history branch")
    parser.add_argument("--history-artifact", default="performance-history-report",
                        help="the artifact the history's charts are uploaded in (used without --image-base)")
    args = parser.parse_args(argv)
    summary = args.run_dir / "summary.md"
    if not summary.is_file():
        print(f"job_summary: {summary}: not found (the run produced no summary)", file=sys.stderr)
        return 2
    parts = [summary.read_text(encoding="utf-8")]
    compare = args.run_dir / "compare.md"
    if compare.is_file():
        parts.append(compare.read_text(encoding="utf-8"))
    parts = [without_images(part, args.artifact).rstrip() for part in parts]
    history = args.history / "history.md" if args.history is not None else None
    if history is not None and history.is_file():
        text = history.read_text(encoding="utf-8")
        parts.append((absolute_images(text, args.image_base) if args.image_base
                      else without_images(text, args.history_artifact)).rstrip())
    elif history is not None:
        parts.append(f"No run history report ({history} not found): see the log of the history step.")
    print("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
