"""A real interactive terminal for tests: bash on a pseudo-terminal, typed into the way a person types.

The shell is interactive (job control on), so a command typed at its prompt runs as a foreground job, gets the
terminal's keys (Ctrl-C, Ctrl-Z) as signals, and `fg` resumes it; close() hangs the terminal up (SIGHUP), as
closing a terminal window does. Every wait has a deadline; close() kills whatever the session left behind.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "READY$ "
CTRL_C, CTRL_Z = "\x03", "\x1a"


class Terminal:
    """bash -i on a pty; `output` is everything the terminal showed (with the keys it echoed)."""

    def __init__(self, env: dict[str, str], cwd: Path = ROOT, columns: int = 200) -> None:
        master, slave = os.openpty()
        os.set_blocking(master, False)
        self._set_size(slave, columns)
        env = {**env, "PS1": PROMPT, "TERM": "dumb", "INPUTRC": "/dev/null", "HISTFILE": "/dev/null"}
        self.proc = subprocess.Popen(["bash", "--norc", "--noprofile", "-i"], cwd=cwd, env=env,
                                     stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=_take_terminal)
        os.close(slave)
        self.master: int | None = master
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.expect(re.escape(PROMPT), timeout=10)

    @staticmethod
    def _set_size(fd: int, columns: int) -> None:
        import fcntl
        import struct
        import termios
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))

    def _read(self) -> None:
        """Drain the terminal all the time (a full pty blocks the programs writing to it). select() waits, so
        this thread also cooperates when the tests run under gevent's monkey patching (a greenlet then)."""
        while self.master is not None:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self.master, 65536)
            except BlockingIOError:
                continue
            except (OSError, ValueError, TypeError):  # EIO: the other side is gone; or closed under us
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    @property
    def output(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", errors="replace")

    def type(self, text: str) -> None:
        """Keys as a person types them (a line ends with \\n)."""
        assert self.master is not None, "the terminal is closed"
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float, since: int = 0) -> re.Match:
        """Wait (at most timeout seconds) until the output after offset `since` matches pattern."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.output, since)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"terminal: no {pattern!r} within {timeout} s; it showed:\n"
                                     f"{self.output[-4000:]}")
            time.sleep(0.05)

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        """Type a command, wait for it to finish; its exit code and what it showed."""
        start = len(self.output)
        marker = f"EXIT-{time.monotonic_ns()}"
        self.type(f"{command}; echo {marker}=$?\n")
        match = self.expect(rf"{marker}=(\d+)", timeout, since=start + len(command))
        return int(match.group(1)), self.output[start:match.start()]

    def job(self) -> psutil.Process | None:
        """The command running at the prompt (the shell's child), if any."""
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return None
        return children[0] if children else None

    def processes(self) -> list[psutil.Process]:
        """Every process of this terminal's session and everything it started (detached ones included)."""
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def hang_up(self) -> None:
        """Close the terminal (as closing its window does): the shell and its jobs get SIGHUP."""
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def close(self) -> list[str]:
        """Hang up, wait (bounded) for the shell, kill anything left; what had to be killed."""
        left = self.processes()
        self.hang_up()
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and _alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # poll and /proc both: gevent's child watcher may reap the shell before Popen sees it
        if self.proc.poll() is None and _alive(self.proc.pid):
            self.proc.kill()
        _, alive = psutil.wait_procs(left, timeout=20)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        self._reader.join(timeout=5)
        return [str(process.pid) for process in alive]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _take_terminal() -> None:
    """In the child (a new session): the pty on fd 0 becomes its controlling terminal, as a login shell's is."""
    import fcntl
    import termios
    os.setsid()  # here, not start_new_session: gevent's subprocess runs preexec_fn before it would
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
