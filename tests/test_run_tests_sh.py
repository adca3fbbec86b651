"""run_tests.sh's command line: usage errors are one line with exit 2, --help, the venv bootstrap is
skipped when up to date, arguments after -- reach Locust, and results/latest follows the newest run."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from suite_runs import ROOT, RUN_TESTS, request_names, run_suite, suite_env, write_config


def run_quick(tmp_path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """run_tests.sh for invocations that end before any traffic."""
    return subprocess.run([str(RUN_TESTS), *args], cwd=ROOT, env=suite_env(tmp_path / "results"),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, problem", [
    (["bogus"], "unknown mode 'bogus'"),
    (["headless", "--frobnicate"], "unknown option --frobnicate"),
    (["headless", "0"], "USERS must be a positive whole number, got '0'"),
    (["headless", "ten"], "USERS must be a positive whole number, got 'ten'"),
    (["headless", "5", "1.5"], "DURATION_S must be a positive whole number, got '1.5'"),
    (["distributed", "0"], "WORKERS must be a positive whole number"),
    (["distributed", "2", "many"], "USERS must be a positive whole number"),
    (["headless", "--shape", "zigzag"], "unknown shape 'zigzag'"),
    (["headless", "--shape"], "--shape needs a value"),
    (["headless", "--client", "curl"], "unknown client 'curl'"),
    (["headless", "5", "10", "127.0.0.1:8082"], "HOST must be a URL like http://127.0.0.1:8082, got '127.0.0.1:8082'"),
    (["distributed", "2", "5", "10", "localhost"], "HOST must be a URL"),
    (["headless", "--threshold"], "--threshold needs KEY=VALUE"),
    (["headless", "--config"], "--config needs a file"),
    (["worker"], "worker needs MASTER_HOST"),
])
def test_usage_error_is_one_line_and_exit_2(tmp_path, args, problem):
    result = run_quick(tmp_path, *args)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("run_tests.sh: "), result.stderr
    assert problem in result.stderr
    assert not (tmp_path / "results").exists(), "a usage error must not leave a results folder"


@pytest.mark.parametrize("args, problem", [
    (["headless", "--threshold", "p95_ms=fast"], "thresholds.p95_ms"),
    (["headless", "--threshold", "p95"], "THRESHOLDS"),
    (["headless", "--config", "/nonexistent/suite.yaml"], "config file not found"),
])
def test_bad_configuration_is_one_line_and_exit_2(tmp_path, args, problem):
    result = run_quick(tmp_path, *args)
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if not line.startswith("run_tests.sh: installing")]
    assert len(lines) == 1 and problem in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_no_mode_prints_usage_and_exits_2(tmp_path):
    result = run_quick(tmp_path)
    assert result.returncode == 2
    assert "./run_tests.sh headless" in result.stdout and "Exit codes" in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"], ["headless", "--help"]])
def test_help_prints_usage_and_exits_0(tmp_path, args):
    result = run_quick(tmp_path, *args)
    assert result.returncode == 0 and result.stderr == ""
    for text in ("./run_tests.sh headless", "./run_tests.sh distributed", "--threshold", "Exit codes"):
        assert text in result.stdout
    assert not result.stdout.startswith("#!")


def test_venv_bootstrap_is_skipped_when_up_to_date(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    first = run_quick(tmp_path, "headless", "--config", missing, timeout=600)  # may install if requirements changed
    assert first.returncode == 2, first.stderr
    second = run_quick(tmp_path, "headless", "--config", missing)
    assert second.returncode == 2
    assert "installing" not in second.stderr and "creating .venv" not in second.stderr, second.stderr
    test_mode = run_quick(tmp_path, "test", "--version", timeout=600)
    assert test_mode.returncode == 0 and "pytest" in (test_mode.stdout + test_mode.stderr)
    again = run_quick(tmp_path, "test", "--version")
    assert "installing" not in again.stderr, again.stderr


@pytest.mark.e2e
def test_arguments_after_double_dash_reach_locust_and_latest_follows_the_newest_run(tmp_path):
    config = write_config(tmp_path, {"wait_time": {"min_seconds": 0.05, "max_seconds": 0.1}})
    results = tmp_path / "results"
    # A tag no task has is read from Locust's arguments and refused before any traffic or results folder.
    refused = run_suite("headless", "2", "3", "--config", str(config), "--no-analysis", "--", "--tags", "nosuchtag",
                        results_root=results, timeout=60)
    assert refused.returncode == 2, refused.explain()
    assert "unknown tag 'nosuchtag'" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    assert list(results.iterdir()) == [], "a refused run must not leave a results folder"

    health = run_suite("headless", "2", "3", "--config", str(config), "--no-analysis", "--", "--tags", "health",
                       results_root=results, timeout=60)
    assert health.returncode == 0, health.explain()
    assert request_names(health, with_requests=False) == {"Health_Check"}
    latest = results / "latest"
    assert latest.is_symlink() and latest.resolve() == health.folder.resolve()
    assert (latest / "summary.json").is_file()
    assert not refused.survivors and not health.survivors


@pytest.mark.parametrize("host", ["http://shop:hunter2@127.0.0.1:8082", "http://shop:hunter2@127.0.0.1:8082/"])
def test_host_with_a_password_is_refused_and_the_password_never_printed(tmp_path, host):
    result = run_quick(tmp_path, "headless", "1", "1", host)
    assert result.returncode == 2
    assert "carries user info" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_waiting_for_the_bundled_service_ends_as_soon_as_its_process_exits():
    """health URL DEADLINE PID: a service that dies at start ends the wait at once with the reason, not after the
    20 s deadline, also while it is a zombie its parent has not reaped yet (run_tests.sh's child is, until bash
    reaps it). The zombie here is the child of a plain Python process that never waits for it: this process's own
    children are reaped by gevent's child watcher once Locust is imported, and a shell may reap its background
    job before `exec` (both seen)."""
    from conftest import free_port
    from loadsuite.cli import health

    script = ("import os, signal, time\n"
              "signal.signal(signal.SIGCHLD, signal.SIG_DFL)\n"  # even if this run was started with it ignored
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    os._exit(0)\n"
              "print(pid, flush=True)\n"
              "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        zombie = int(parent.stdout.readline())
        for _ in range(250):
            with open(f"/proc/{zombie}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] == "Z":
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the child never became a zombie")
        started = time.monotonic()
        assert health.main([f"http://127.0.0.1:{free_port()}", "20", str(zombie)]) == 1
        assert time.monotonic() - started < 5
    finally:
        parent.kill()
        parent.wait(timeout=5)


def test_waiting_for_the_bundled_service_polls_until_it_answers(tmp_path):
    """The service comes up a second after the wait begins: one waiting process sees it."""
    from conftest import PYTHON, free_port
    from loadsuite.cli import health

    port = free_port()
    late = subprocess.Popen([PYTHON, "-c", f"import time; time.sleep(1); import sys; sys.argv[1:] = ['--host', "
                             f"'127.0.0.1', '--port', '{port}', '--db', r'{tmp_path / 'p.db'}', '--reset']; "
                             "from product_service.cli import main; main()"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert health.main([f"http://127.0.0.1:{port}", "20", str(late.pid)]) == 0
    finally:
        late.terminate()
        late.wait(timeout=10)
