"""Results that never lie (issue 31): one folder per run, made atomically; each run reads back only its own files;
`results/latest` always ends up naming the newest run, or the run says why not and exits 4 before any traffic."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT
from lying_shop import running, served
from loadsuite.reporting.folders import FolderError, point_latest, start_run
from suite_runs import RUN_TESTS, suite_env

STAMP = "20260101T000000Z"


START_ONE = ("import sys; from pathlib import Path; from loadsuite.reporting.folders import start_run; "
             "sys.stdin.readline(); print(start_run(Path(sys.argv[1]), sys.argv[2]))")


def test_runs_started_in_the_same_second_get_a_folder_each_and_latest_names_the_last(tmp_path):
    procs = [subprocess.Popen([PYTHON, "-c", START_ONE, str(tmp_path), STAMP], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(1.0)  # every process is up and waiting on its stdin
    for proc in procs:  # then all are let go at once
        proc.stdin.write("go\n")
        proc.stdin.flush()
    folders = [proc.communicate(timeout=30)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(set(folders)) == 8 and all(Path(f).is_dir() for f in folders)
    assert sorted(Path(f).name for f in folders) == [STAMP, *(f"{STAMP}-{n:02d}" for n in range(1, 8))]
    # Folder and link are made under one lock: the folder created last (the highest suffix) is the one latest names.
    assert os.readlink(tmp_path / "latest") == f"{STAMP}-07"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".latest-")]  # no temporary link left


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_latest_that_is_not_a_link_is_never_replaced_or_written_into(tmp_path, kind):
    latest = tmp_path / "latest"
    if kind == "folder":
        latest.mkdir()
        (latest / "summary.json").write_text('{"verdict": {"passed": true}}')
    else:
        latest.write_text("a note the user keeps here")
    before = sorted(p.name for p in tmp_path.iterdir()) + [".latest.lock"]
    with pytest.raises(FolderError) as refused:
        start_run(tmp_path, STAMP)
    assert f"{latest} is a real {kind}, not a link" in str(refused.value) and "rename or remove it" in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before), "the new run folder is removed again"
    if kind == "folder":
        assert [p.name for p in latest.iterdir()] == ["summary.json"], "no link was made inside it"


def test_a_dangling_or_old_latest_link_is_replaced_in_one_rename(tmp_path):
    os.symlink("gone", tmp_path / "latest")
    folder = start_run(tmp_path, STAMP)
    assert os.readlink(tmp_path / "latest") == folder.name
    newer = start_run(tmp_path, STAMP)
    assert os.readlink(tmp_path / "latest") == newer.name == f"{STAMP}-01"


def test_a_results_root_that_cannot_be_written_is_one_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        root = blocker / "results"  # a path under a file: even root cannot create it
    else:
        root = tmp_path / "ro"
        root.mkdir()
        root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(FolderError) as refused:
        start_run(root, STAMP)
    assert "cannot create" in str(refused.value)


def test_locust_run_directly_makes_a_folder_of_its_own_per_process(tmp_path, monkeypatch):
    """Without run_tests.sh (no --results-dir, no --csv), two processes started in the same second used to share
    results/<second>: each now gets its own."""
    from types import SimpleNamespace

    from loadsuite.runtime import end_of_run

    monkeypatch.chdir(tmp_path)
    environment = SimpleNamespace(parsed_options=SimpleNamespace(results_dir="", csv_prefix=None))
    first = SimpleNamespace(results_dir=None, run_id=STAMP)
    second = SimpleNamespace(results_dir=None, run_id=STAMP)
    assert end_of_run.results_dir(first, environment) == Path("results") / STAMP
    assert end_of_run.results_dir(second, environment) == Path("results") / f"{STAMP}-01"
    assert end_of_run.results_dir(first, environment) == Path("results") / STAMP  # once per process


# Through run_tests.sh ----------------------------------------------------------------------------------------

def _same_second(tmp_path: Path) -> Path:
    """A `date` that always says the same second: runs started at once then certainly ask for one name."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "date").write_text(f"#!/bin/sh\necho {STAMP}\n")
    (shim / "date").chmod(0o755)
    return shim


def _start(args: list[str], results_root: Path, path_prefix: Path, out: Path) -> subprocess.Popen:
    env = suite_env(results_root, {"PATH": f"{path_prefix}:{os.environ['PATH']}"})
    return subprocess.Popen([str(RUN_TESTS), *args], cwd=ROOT, env=env, stdout=open(out, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.e2e
def test_three_runs_started_in_the_same_second_each_read_back_only_their_own_results(tmp_path):
    results_root = tmp_path / "results"
    shim = _same_second(tmp_path)
    with running() as shop:
        procs = [_start(["headless", "1", "2", shop, "--no-analysis", "--", "--tags", "health"], results_root, shim,
                        tmp_path / f"run{i}.log") for i in range(3)]
        codes = [proc.wait(timeout=120) for proc in procs]
    logs = [(tmp_path / f"run{i}.log").read_text() for i in range(3)]
    folders = []
    for code, log in zip(codes, logs):
        assert "Traceback" not in log, log
        match = re.search(r"results in (\S+) \(exit code (\d+)\)", log)
        assert match and int(match.group(2)) == code, log[-2000:]
        folder = Path(match.group(1))
        folders.append(folder)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["run_id"] == folder.name  # its own summary, not a neighbour's
        verdict = log.strip().splitlines()[-1]
        assert verdict == f"verdict: {'PASS' if summary['verdict']['passed'] else 'FAIL'} (exit code {code})", log
    assert len(set(folders)) == 3 and {f.name for f in folders} == {STAMP, f"{STAMP}-01", f"{STAMP}-02"}
    assert os.readlink(results_root / "latest") == f"{STAMP}-02"  # the one created last


@pytest.mark.e2e
def test_a_latest_that_is_a_real_folder_stops_the_run_with_exit_4_before_any_traffic(tmp_path):
    results_root = tmp_path / "results"
    stale = results_root / "latest"
    stale.mkdir(parents=True)
    (stale / "summary.json").write_text('{"verdict": {"passed": true, "exit_code": 0}}')
    with running() as shop:
        proc = _start(["headless", "1", "2", shop, "--no-analysis"], results_root, _same_second(tmp_path),
                      tmp_path / "run.log")
        code = proc.wait(timeout=60)
        requests = served(shop)
    log = (tmp_path / "run.log").read_text()
    assert code == 4, log
    assert requests == 1, "only the health check reached the target"
    lines = [line for line in log.splitlines() if line.strip() and not line.startswith("run_tests.sh: note:")]
    assert lines == [f"run_tests.sh: results could not be written: {stale} is a real folder, not a link, so it cannot "
                     "name the newest run: rename or remove it (exit code 4)"], log
    assert sorted(p.name for p in results_root.iterdir() if not p.name.startswith(".")) == ["latest"]
    assert json.loads((stale / "summary.json").read_text())["verdict"]["passed"] is True  # untouched
