"""What the person at the terminal sees: the verdict block as the last lines of every run (run_tests.sh and
`locust -f locustfile.py` run directly), colour only on a terminal, install progress, the shape note."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, free_port, start_service
from loadsuite.reporting.console import use_colour, verdict_block
from suite_runs import RUN_TESTS, suite_env, write_config

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY = {
    "run_id": "r1",
    "thresholds": [{"metric": "error_rate", "scope": "total", "limit": 0.01, "observed": 0.1156, "passed": False},
                   {"metric": "p95_ms", "scope": "Buy_Product", "limit": 0.001, "observed": 0.0, "passed": True},
                   {"metric": "min_rps", "scope": "total", "limit": 5, "observed": None, "passed": False}],
    "consistency": {"enabled": True, "passed": False, "products_checked": 12, "inconclusive": 1,
                    "dropped_records": 0, "buys_recorded": 340,
                    "violations": [{"kind": "lost_update", "product": "Laptop", "message": "two buys saw 7"}]},
    "verdict": {"passed": False, "exit_code": 1, "reasons": ["..."]},
}


def test_block_names_each_threshold_with_limit_and_observed_and_ends_with_the_verdict(tmp_path):
    (tmp_path / "summary.md").write_text("x")
    lines = verdict_block(SUMMARY, tmp_path, colour=False).splitlines()
    assert lines[-1] == "verdict: FAIL (exit code 1)"
    error_rate = next(line for line in lines if line.startswith("error_rate total"))
    assert "<= 1.00%" in error_rate and "11.56%" in error_rate and error_rate.endswith("FAIL")
    tiny = next(line for line in lines if line.startswith("p95_ms Buy_Product"))
    assert "<= 0.001 ms" in tiny and " 0 ms " in tiny  # the limit never reads as "0 ms"
    assert "no requests" in next(line for line in lines if line.startswith("min_rps total"))
    oracle = next(line for line in lines if line.startswith("oracle:"))
    for count in ("12 products checked", "1 inconclusive", "1 violations", "0 records dropped", "340 buys recorded"):
        assert count in oracle
    assert f"results: {tmp_path} (summary.md)" in lines
    assert not ANSI.search("\n".join(lines))


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path):
    coloured = verdict_block(SUMMARY, tmp_path, colour=True)
    assert "\x1b[31mFAIL" in coloured and ANSI.sub("", coloured) == verdict_block(SUMMARY, tmp_path, colour=False)

    class Tty:
        def isatty(self):
            return True

    assert use_colour(Tty(), {"TERM": "xterm"}) and not use_colour(Tty(), {"TERM": "xterm", "NO_COLOR": "1"})
    assert not use_colour(open(os.devnull, "w"), {}) and use_colour(open(os.devnull, "w"), {"FORCE_COLOR": "1"})


def test_verdict_command_without_a_summary_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "loadsuite.cli.verdict", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "summary.json" in result.stderr


def test_a_shape_run_says_the_shape_decides_users_and_duration(tmp_path):
    # run_tests.sh evals what run_args prints: the note must be a line on the console (stderr).
    script = f'eval "$("{sys.executable}" -m loadsuite.cli.run_args headless 10 30 --shape spike)"'
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ("run_tests.sh: the spike shape decides users and duration (USERS/DURATION_S "
                                     "are not used): see docs/load_shapes.md")


def _run_merged(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, list[str]]:
    """Run a command with stdout and stderr merged, as a terminal shows them; kill its session on timeout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"{cmd[0]} did not end within {timeout} s:\n{out[-3000:]}")
    return proc.returncode, [line for line in out.splitlines() if line.strip()]


def _assert_verdict_is_last(lines: list[str], code: int) -> None:
    table = max(i for i, line in enumerate(lines) if line.strip().startswith("Aggregated"))  # Locust's final table
    header = max(i for i, line in enumerate(lines) if line.startswith("=== Verdict"))
    assert header > table, "\n".join(lines[-40:])
    block = lines[header:]
    assert block[-1] == f"verdict: {'PASS' if code == 0 else 'FAIL'} (exit code {code})", "\n".join(block)
    assert any(line.startswith("p95_ms total") for line in block) and any(line.startswith("oracle:") for line in block)
    assert any(line.startswith("results: ") for line in block)
    assert not ANSI.search("\n".join(block))  # not a terminal: plain


@pytest.mark.e2e
def test_run_tests_sh_ends_with_the_verdict_block(tmp_path):
    config = write_config(tmp_path, {"wait_time": {"min_seconds": 0.05, "max_seconds": 0.1}})
    env = suite_env(tmp_path / "results")
    env.pop("FORCE_COLOR", None)
    code, lines = _run_merged([str(RUN_TESTS), "headless", "2", "3", "--config", str(config), "--no-analysis"],
                              env, timeout=90)
    assert code == 0, "\n".join(lines[-30:])
    _assert_verdict_is_last(lines, code)
    assert sum(line.startswith("=== Verdict") for line in lines) == 1  # once, last: not scrolled away


@pytest.mark.e2e
def test_locust_run_directly_ends_with_the_verdict_block(tmp_path):
    service = start_service(tmp_path)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("LOADSUITE_VERDICT_LAST", "FORCE_COLOR")}
        code, lines = _run_merged([sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "2",
                                   "-r", "2", "-t", "3s", "--host", service.url, "--results-dir",
                                   str(tmp_path / "run")], env, timeout=60)
    finally:
        service.stop()
    assert code in (0, 1), "\n".join(lines[-30:])
    _assert_verdict_is_last(lines, code)
    assert sum(line.startswith("=== Verdict") for line in lines) == 1


def _tiny_wheel(folder: Path) -> Path:
    """A real, installable wheel built by hand, so pip's own progress can be watched without the network."""
    wheel = folder / "issue16_tiny-0.1-py3-none-any.whl"
    dist = "issue16_tiny-0.1.dist-info"
    files = {"issue16_tiny.py": "VALUE = 1\n",
             f"{dist}/METADATA": "Metadata-Version: 2.1\nName: issue16-tiny\nVersion: 0.1\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{dist}/RECORD", "".join(f"{name},,\n" for name in [*files, f"{dist}/RECORD"]))
    return wheel


@pytest.mark.e2e
def test_first_run_says_each_install_step_and_shows_pips_progress(tmp_path):
    # A copy of run_tests.sh in an empty folder: the first run creates .venv and installs a local wheel.
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "run_tests.sh").write_bytes(RUN_TESTS.read_bytes())
    (root / "run_tests.sh").chmod(0o755)
    wheel = _tiny_wheel(root)
    (root / "requirements.txt").write_text("")
    (root / "requirements-dev.txt").write_text(f"--no-index\n{wheel}\n")
    env = {**os.environ, "PYTHON": getattr(sys, "_base_executable", sys.executable)}  # the interpreter behind .venv
    env.pop("USE_SYSTEM_PYTHON", None)
    result = subprocess.run([str(root / "run_tests.sh"), "test", "--version"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=180)
    err = result.stderr
    assert "[1/2] creating .venv" in err and "[2/2] installing requirements-dev.txt into .venv" in err, err
    assert "Processing" in err and "Successfully installed issue16-tiny-0.1" in err, err  # pip's own lines
    assert err.index("[1/2]") < err.index("[2/2]") < err.index("Successfully installed") < err.index(".venv ready")
