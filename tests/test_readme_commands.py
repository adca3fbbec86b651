"""Every command the README shows runs as written in a fresh copy of the repository.

Each ```bash block runs, line by line and in README order, from the root of a fresh copy (the tracked
files, with .venv linked to this checkout's up-to-date venv, so nothing is installed). A trailing
`# exit N` comment is the exit code the README promises; every other line must exit 0. A block
preceded by an `<!-- illustrative ... -->` marker shows forms with placeholders and is not run.

Bounded variants (the only departures from "as written", each so the suite stays fast):
- a run_tests.sh run without a duration of its own (the default 60 s) gets Ctrl-C (SIGINT) after
  INTERRUPT_AFTER_S seconds, as a user would press it; it must then end by itself with its reports;
- `./run_tests.sh test` gets `--collect-only -q tests/test_readme_commands.py` appended (the venv and
  pytest wiring are what it proves; the full suite would run itself);
- the fixed port 8082 becomes a free port (tests never take fixed ports).
Inline `.venv/bin/python ...` commands in the prose run too; inline `./run_tests.sh` commands are checked
by the argument parser run_tests.sh uses (loadsuite/cli/run_args.py), without traffic.
README only: the command blocks of docs/*.md deploy elsewhere (docker, kubectl, a reverse proxy, other hosts).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port
from loadsuite.cli import run_args

README = ROOT / "README.md"
INTERRUPT_AFTER_S = 6.0
LINE_TIMEOUT_S = 90.0
BLOCK = re.compile(r"(<!--(?P<marker>.*?)-->\s*)?^```bash\n(?P<body>.*?)^```", re.S | re.M)
FENCED = re.compile(r"^```.*?^```", re.S | re.M)  # any fenced block: code to read (python) or to run (bash)
INLINE = re.compile(r"`((?:\./run_tests\.sh|\.venv/bin/python|python3?|bash)\b[^`]*)`")
EXPECTED_EXIT = re.compile(r"#.*\bexit (\d)\b")


def readme_blocks() -> list[tuple[bool, list[str]]]:
    """(illustrative, command lines) for every ```bash block, in order."""
    blocks = []
    for match in BLOCK.finditer(README.read_text()):
        illustrative = "illustrative" in (match.group("marker") or "")
        lines = [line for line in match.group("body").splitlines() if line.strip() and not line.startswith("#")]
        blocks.append((illustrative, lines))
    return blocks


def inline_commands() -> list[str]:
    text = FENCED.sub("", README.read_text())  # commands inside blocks are run as blocks; code is not a command
    commands = [m.group(1).strip() for m in INLINE.finditer(text)]
    return [c for c in commands if len(shlex.split(c)) > 1]  # `.venv/bin/python` alone names it, runs nothing


def test_readme_never_shows_a_bare_python_command():
    # `python ...` fails with ModuleNotFoundError unless the user activates .venv, which the README never asks.
    bare = [c for _, lines in readme_blocks() for c in lines if re.match(r"(python3?|pip)\b", c.strip())]
    bare += [c for c in inline_commands() if re.match(r"(python3?|pip)\b", c)]
    assert not bare, bare


def test_every_inline_run_tests_command_is_accepted_by_its_parser():
    checked = 0
    for command in inline_commands():
        args = shlex.split(command)
        if args[0] != "./run_tests.sh" or len(args) < 2 or args[1] in ("test", "--help"):
            continue
        if any(placeholder in command for placeholder in ("[", "MASTER_HOST")):
            continue
        try:
            run_args.plan(args[1:], env={})  # what run_tests.sh evaluates before any traffic
        except run_args.UsageError as error:
            pytest.fail(f"{command}: {error}")
        checked += 1
    assert checked >= 4


def _fresh_copy(target: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout
    for relative in filter(None, listed.decode().split("\0")):
        source = ROOT / relative
        if source.is_file() and not relative.startswith("results/"):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_bytes(source.read_bytes())
            (target / relative).chmod(source.stat().st_mode)
    (target / ".venv").symlink_to((ROOT / ".venv").resolve())
    return target


def _venv_is_current(root: Path) -> bool:
    """True when run_tests.sh would not install anything (so the shared venv is never touched)."""
    import hashlib
    for requirements in ("requirements.txt", "requirements-dev.txt"):
        want = hashlib.sha256((root / "requirements.txt").read_bytes() + (root / requirements).read_bytes()).hexdigest()
        stamp = root / ".venv" / f".installed-{requirements}"
        if not stamp.is_file() or stamp.read_text().strip() != want:
            return False
    return True


def _bounded(line: str, port: int) -> tuple[str, bool]:
    """The bounded variant of one README line (see the module docstring) and whether it gets Ctrl-C."""
    line = line.replace("8082", str(port))
    command = line.split("#", 1)[0].strip()
    args = shlex.split(command) if command else []
    if args[:2] == ["./run_tests.sh", "test"]:
        return command + " --collect-only -q tests/test_readme_commands.py", False
    interrupt = args[:1] == ["./run_tests.sh"] and len(args) >= 2 and args[1] == "headless" \
        and not (len(args) >= 4 and args[3].isdigit())
    return command, interrupt


def _run_line(line: str, interrupt: bool, root: Path, env: dict, timeout: float = LINE_TIMEOUT_S) -> tuple[int, str]:
    proc = subprocess.Popen(["bash", "-c", line], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        if interrupt:
            try:
                out, _ = proc.communicate(timeout=INTERRUPT_AFTER_S)
                return proc.returncode, out
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"{line!r} did not end within {timeout} s:\n{out[-3000:]}")


@pytest.mark.e2e
def test_every_readme_command_block_runs_as_written_on_a_fresh_copy(tmp_path):
    root = _fresh_copy(tmp_path / "clone")
    if not _venv_is_current(root) and os.environ.get("CI") != "true":  # in CI the venv is the job's own
        pytest.skip("this checkout's .venv is not installed for the current requirements: "
                    "run ./run_tests.sh once (the test never installs into it)")
    env = {k: v for k, v in os.environ.items() if k not in ("RESULTS_ROOT", "CONFIG_PATH", "VIRTUAL_ENV")}
    env["STOP_TIMEOUT"] = "3"
    port = free_port()
    ran, background = [], []
    try:
        for illustrative, lines in readme_blocks():
            if illustrative:
                continue
            for line in lines:
                command, interrupt = _bounded(line, port)
                if command.endswith("&"):  # a service the next line uses: started, stopped after the block
                    background.append(subprocess.Popen(["bash", "-c", f"exec {command[:-1]}"], cwd=root, env=env,
                                                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                                       start_new_session=True))
                    _wait_for_port(port)
                    continue
                expected = int(m.group(1)) if (m := EXPECTED_EXIT.search(line)) else 0
                started = time.monotonic()
                code, out = _run_line(command, interrupt, root, env)
                assert "Traceback" not in out, f"{command}:\n{out[-3000:]}"
                if interrupt:
                    assert code in (0, 1), f"{command} (Ctrl-C after {INTERRUPT_AFTER_S} s): exit {code}\n{out[-3000:]}"
                    assert out.rstrip().splitlines()[-1].startswith("verdict: "), out[-1500:]
                else:
                    assert code == expected, f"{command}: exit {code}, README says {expected}\n{out[-3000:]}"
                ran.append((command, code, round(time.monotonic() - started, 1)))
            for proc in background:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            background.clear()
        for command in inline_commands():
            if command.startswith(".venv/bin/python"):
                started = time.monotonic()
                code, out = _run_line(command, False, root, env, timeout=30)  # a one-shot command, not a server
                assert code == 0 and "Traceback" not in out, f"{command}: exit {code}\n{out[-2000:]}"
                ran.append((command, code, round(time.monotonic() - started, 1)))
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    print("\n".join(f"{seconds:6.1f} s  exit {code}  {command}" for command, code, seconds in ran))
    commands = [c for c, *_ in ran]
    assert any(c.startswith("./run_tests.sh headless") for c in commands) and \
        any("analyze_results.py --compare" in c for c in commands), ran
    runs = sorted((root / "results").glob("2*"))
    against_unsafe = json.loads((runs[-1] / "summary.json").read_text())  # the oracle example runs last
    assert against_unsafe["consistency"]["passed"] is False  # the README's promise: lost updates named
    assert against_unsafe["consistency"]["violation_counts"].get("lost_update", 0) > 0


def _wait_for_port(port: int, timeout: float = 20.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
