"""The suite on a real terminal: an interactive bash on a pseudo-terminal, keys typed as a person types them.

Without a terminal (a pipe, /dev/null, CI) every other test already covers the same commands; here the terminal's
own job control is in play: the foreground process group, its Ctrl-C and Ctrl-Z, `fg`, and the hangup when the
window closes. Each test starts its own shell and kills whatever it left (Terminal.close()).
"""
from __future__ import annotations

import json
import re
import time

import psutil
import pytest

from suite_runs import suite_env
from terminal import CTRL_C, CTRL_Z, Terminal

SPAWNED = r"All users spawned"
VERDICT = r"verdict: (PASS|FAIL) \(exit code (\d)\)"


@pytest.fixture
def terminal(tmp_path):
    term = Terminal(suite_env(tmp_path / "results"))
    yield term
    left = term.close()
    assert not left, f"processes outlived the terminal: {left}"


def _start(term: Terminal, command: str, settle_s: float = 0.0) -> int:
    """Type a command and wait until its users run (then settle_s more); where its output starts."""
    start = len(term.output)
    term.type(command + "\n")
    term.expect(SPAWNED, 60, start)
    time.sleep(settle_s)
    return start


def _summary(tmp_path) -> dict:
    return json.loads((tmp_path / "results" / "latest" / "summary.json").read_text(encoding="utf-8"))


def _script_cpu_seconds(term: Terminal) -> float:
    job = term.job()
    if job is None:
        return 0.0
    times = job.cpu_times()
    return times.user + times.system


def test_main_command_finishes_on_a_terminal_and_exits_0(terminal, tmp_path):
    start = _start(terminal, "./run_tests.sh headless 2 5; echo DONE=$?", settle_s=2)
    cpu = _script_cpu_seconds(terminal)  # while Locust runs, run_tests.sh only waits for it
    done = terminal.expect(r"DONE=(\d+)", 60, start)
    shown = terminal.output[start:done.start()]
    assert done.group(1) == "0", shown[-3000:]
    assert re.search(VERDICT, shown).group(2) == "0"
    assert (tmp_path / "results" / "latest" / "summary.md").is_file()
    assert cpu < 1.0, f"run_tests.sh used {cpu:.2f} s of CPU while waiting: a wait loop spins"


def test_ctrl_c_typed_on_the_terminal_stops_the_run_with_reports(terminal, tmp_path):
    start = _start(terminal, "./run_tests.sh headless 2 120; echo DONE=$?", settle_s=2)
    typed = time.monotonic()
    terminal.type(CTRL_C)
    done = terminal.expect(r"DONE=(\d+)", 40, start)
    took = time.monotonic() - typed
    shown = terminal.output[start:done.start()]
    assert "second interrupt" not in shown, "one Ctrl-C reaches Locust twice (terminal and script): one stop"
    assert "Traceback" not in shown
    verdict = re.search(VERDICT, shown)
    assert verdict and done.group(1) == verdict.group(2), shown[-3000:]
    summary = _summary(tmp_path)
    assert summary["interrupted"] is True and summary["totals"]["requests"] > 0
    assert (tmp_path / "results" / "latest" / "summary.md").is_file()
    assert took < 30


def test_keys_typed_on_the_terminal_reach_locust(terminal, tmp_path):
    """Locust's headless keyboard controls work: W adds ten users."""
    start = _start(terminal, "./run_tests.sh headless 2 8; echo DONE=$?")
    terminal.type("W")
    terminal.expect(r"Ramping to 12 users", 10, start)
    done = terminal.expect(r"DONE=(\d+)", 60, start)
    assert done.group(1) == "0", terminal.output[start:][-3000:]
    assert _summary(tmp_path)["users"]["peak"] == 12


def test_the_terminal_is_given_back_as_it_was(terminal):
    """Locust puts the terminal in cbreak mode; after a run (even one stopped at once) it is restored."""
    code, before = terminal.run("stty -g", timeout=10)
    start = _start(terminal, "./run_tests.sh headless 2 120; echo DONE=$?")
    terminal.type(CTRL_C)
    time.sleep(0.3)
    terminal.type(CTRL_C)  # the second one: out at once, Locust killed before it can restore the terminal
    terminal.expect(r"DONE=130", 30, start)
    code, after = terminal.run("stty -g", timeout=10)
    assert before.split()[-1] == after.split()[-1]


@pytest.mark.e2e
def test_ctrl_z_pauses_the_run_and_fg_resumes_it(terminal, tmp_path):
    start = _start(terminal, "./run_tests.sh distributed 1 2 8")
    terminal.type(CTRL_Z)
    terminal.expect(r"Stopped", 10, start)
    time.sleep(1)
    states = {" ".join(p.cmdline()): p.status() for p in terminal.processes() if "locust" in " ".join(p.cmdline())}
    assert states and all(state == psutil.STATUS_STOPPED for state in states.values()), states
    terminal.type("fg; echo DONE=$?\n")
    done = terminal.expect(r"DONE=(\d+)", 60, start)
    shown = terminal.output[start:done.start()]
    assert done.group(1) == "0" and re.search(VERDICT, shown).group(2) == "0", shown[-3000:]
    assert _summary(tmp_path)["totals"]["requests"] > 0


@pytest.mark.e2e
def test_closing_the_terminal_ends_the_run_with_reports_and_the_verdict_in_console_log(terminal, tmp_path):
    _start(terminal, "./run_tests.sh headless 2 120", settle_s=2)
    run = terminal.processes()
    terminal.hang_up()
    _, alive = psutil.wait_procs(run, timeout=40)
    assert not alive, [p.cmdline() for p in alive]
    folder = (tmp_path / "results" / "latest").resolve()
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["interrupted"] is True and summary["totals"]["requests"] > 0
    assert (folder / "summary.md").is_file()
    console = (folder / "console.log").read_text(encoding="utf-8")
    assert "the terminal closed (SIGHUP)" in console
    assert re.search(VERDICT, console).group(2) == str(summary["verdict"]["exit_code"])


@pytest.mark.e2e
def test_the_web_ui_on_a_terminal_quits_on_ctrl_c_without_a_verdict_when_no_test_ran(terminal, tmp_path):
    from conftest import free_port
    port = free_port()
    start = len(terminal.output)
    terminal.type(f"WEB_PORT={port} ./run_tests.sh ui; echo DONE=$?\n")
    terminal.expect(r"Starting web interface", 40, start)
    terminal.type(CTRL_C)
    done = terminal.expect(r"DONE=(\d+)", 30, start)
    shown = terminal.output[start:done.start()]
    assert done.group(1) == "0" and "no test was started in the web UI" in shown
    assert "verdict:" not in shown
    assert not (tmp_path / "results" / "latest" / "summary.json").exists()


@pytest.mark.e2e
def test_master_and_worker_each_on_its_own_terminal_finish_and_exit_0(tmp_path):
    from conftest import free_port
    env = suite_env(tmp_path / "results", {"MASTER_PORT": str(free_port())})
    master, worker = Terminal(env), Terminal(env)
    try:
        start = len(master.output)
        master.type("./run_tests.sh master 2 5; echo DONE=$?\n")
        master.expect(r"master on", 40, start)
        code, shown = worker.run("./run_tests.sh worker 127.0.0.1", timeout=90)
        done = master.expect(r"DONE=(\d+)", 60, start)
        assert (done.group(1), code) == ("0", 0), master.output[start:][-3000:] + shown[-2000:]
        assert _summary(tmp_path)["totals"]["requests"] > 0
    finally:
        assert not master.close() and not worker.close()
