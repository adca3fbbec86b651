"""README "Adding a task", done as a Locust user does it: the README's method pasted into a copy of the repository.

One method in locustfile.py, nothing else: the catalogue lists it, config.yaml may weigh it (a wrong name is
refused with the list), `--tags` selects it, and a run sends its request and checks its answer.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from suite_runs import stats_rows, suite_env

ANCHOR = "    # Expected negative paths"


def readme_task() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Adding a task", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The repository as a fresh clone has it (no venv, no results), with the README's task pasted in."""
    target = tmp_path_factory.mktemp("repo") / "repo"
    shutil.copytree(ROOT, target, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "results", "__pycache__", ".pytest_cache", ".hypothesis", "*.db*"))
    (target / ".venv").symlink_to(ROOT / ".venv")
    locustfile = target / "locustfile.py"
    text = locustfile.read_text(encoding="utf-8")
    assert text.count(ANCHOR) == 1, "the README's example goes before the negative paths: keep that comment"
    locustfile.write_text(text.replace(ANCHOR, readme_task() + "\n" + ANCHOR), encoding="utf-8")
    return target


def run(copy: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=copy, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


def user_types(listing: str) -> dict[str, list[str]]:
    """`python -m loadsuite.catalogue`'s output: {user type: its task lines}."""
    found: dict[str, list[str]] = {}
    for line in listing.splitlines()[1:]:
        if line.startswith("  "):
            found[current].append(line.strip())
        elif line.strip():
            current = line.split()[0]
            found[current] = []
    return found


def test_the_readme_task_is_one_method_the_catalogue_lists(copy):
    assert "def browse_books" in readme_task() and readme_task().count("def ") == 1
    listing = run(copy, "-m", "loadsuite.catalogue")
    assert listing.returncode == 0, listing.stderr
    types = user_types(listing.stdout)
    full_mix = next(name for name, tasks in types.items() if len(tasks) == max(map(len, types.values())))
    assert any(re.fullmatch(r"browse_books +2  browse", line) for line in types[full_mix]), listing.stdout
    listing_their_tasks = [name for name in types if name != full_mix]
    # the user types that list their tasks run the new one when they name it
    assert not any("browse_books" in line for name in listing_their_tasks for line in types[name])


def test_config_yaml_may_weigh_the_new_task_and_a_wrong_name_is_refused_with_the_list(copy, tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("scenario_weights:\n  browse_books: 5\n", encoding="utf-8")
    bad.write_text("scenario_weights:\n  browse_book: 5\n", encoding="utf-8")
    assert run(copy, "config_loader.py", str(good)).returncode == 0
    refused = run(copy, "config_loader.py", str(bad))
    assert refused.returncode == 2 and "unknown task 'browse_book'" in refused.stderr
    assert "browse_books" in refused.stderr.split("defines", 1)[1]
    weighted = run(copy, "-m", "loadsuite.catalogue", str(good))
    assert re.search(r"^  browse_books +5  browse$", weighted.stdout, re.M), weighted.stdout


@pytest.mark.e2e
def test_a_run_sends_the_new_tasks_request_and_checks_its_answer(copy, tmp_path):
    results, config = tmp_path / "results", tmp_path / "only-books.yaml"
    # Only the new task of its tag weighs anything: every task run of this test is one of its requests.
    config.write_text("scenario_weights: {browse_all_products: 0, browse_books: 3}\n"
                      "wait_time: {min_seconds: 0.1, max_seconds: 0.2}\n", encoding="utf-8")
    done = subprocess.run([str(copy / "run_tests.sh"), "headless", "2", "5", "--no-analysis", "--config", str(config),
                           "--", "ProductServiceUser", "--tags", "browse"], cwd=copy, env=suite_env(results),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = stats_rows(results / "latest" / "stats_stats.csv")
    assert rows["Get_Books"]["Request Count"] > 0 and rows["Get_Books"]["Failure Count"] == 0, rows.keys()
    assert set(rows) == {"Get_Books", "Aggregated"}, rows.keys()  # --tags browse, and the other browse task weighs 0
