"""The reliability fault matrix (docs/reliability.md): run_tests.sh against dead, lying, stalling and killed targets.

Every run here is the real thing: `run_tests.sh` as a user starts it, the reference service as a separate
process, tests/fault_proxy.py in between when a fault must be switched on at an exact moment. Each row checks
the outcome a user sees: the exit code, a one-line message naming the cause, no traceback anywhere, and a
complete results folder for every run that sent traffic.
"""
from __future__ import annotations

import ast
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import ROOT, free_port
from fault_proxy import FaultProxy

TRACEBACK = "Traceback (most recent call last)"
REQUIRED_FILES = ("report.html", "stats_stats.csv", "summary.json", "junit.xml")
STOP_TIMEOUT_S = 3
# Short runs: a 1 s request timeout and little think time, so every fault shows up within seconds.
FAST_CONFIG = {"service": {"request_timeout_seconds": 1}, "wait_time": {"min_seconds": 0.05, "max_seconds": 0.2}}


# Helpers -------------------------------------------------------------------------------------------

def write_config(tmp_path: Path, extra: dict | None = None) -> Path:
    """FAST_CONFIG merged (one level deep) with `extra`, written as YAML into tmp_path."""
    data = {key: dict(value) for key, value in FAST_CONFIG.items()}
    for section, values in (extra or {}).items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@dataclass
class SuiteRun:
    """One `run_tests.sh` process in its own session, output captured to files."""

    proc: subprocess.Popen
    results_root: Path
    out_path: Path
    err_path: Path

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr or text in self.stdout:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen within {timeout} s (exit {self.proc.poll()}):\n{self.stderr[-3000:]}")

    def session_processes(self) -> list[psutil.Process]:
        """Every live process of the run (run_tests.sh, service, master, workers): its session, and what it
        started in sessions of their own (run_tests.sh detaches the service and local workers from the terminal)."""
        found = {}
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        for process in [*psutil.process_iter(), *descendants]:
            try:
                ours = process in descendants or os.getsid(process.pid) == self.proc.pid
                if ours and process.status() != psutil.STATUS_ZOMBIE:
                    found[process.pid] = process
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return list(found.values())

    def folder(self) -> Path:
        """The one run folder this run created under RESULTS_ROOT."""
        folders = [p for p in self.results_root.iterdir() if p.is_dir() and not p.is_symlink()]
        assert len(folders) == 1, f"expected one run folder, found {folders}"
        return folders[0]

    def kill_all(self) -> None:
        for process in self.session_processes():
            try:
                process.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class Launcher:
    """Starts `run_tests.sh ARGS` runs (RESULTS_ROOT under `base`) and kills whatever they left behind."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.runs: list[SuiteRun] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None, name: str = "run") -> SuiteRun:
        results_root = self.base / f"results-{name}"
        full_env = {**os.environ, "RESULTS_ROOT": str(results_root), "USE_SYSTEM_PYTHON": "1",
                    "PYTHON": sys.executable, "STOP_TIMEOUT": str(STOP_TIMEOUT_S), **(env or {})}
        out_path, err_path = self.base / f"{name}.out", self.base / f"{name}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([str(ROOT / "run_tests.sh"), *args], cwd=ROOT, env=full_env, stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        run = SuiteRun(proc, results_root, out_path, err_path)
        self.runs.append(run)
        return run

    def cleanup(self) -> None:
        for run in self.runs:
            run.kill_all()


@pytest.fixture
def suite(tmp_path):
    """Start `run_tests.sh ARGS` (RESULTS_ROOT in tmp_path); every process it started is gone at teardown."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.cleanup()


def assert_no_traceback(run: SuiteRun, folder: Path | None = None) -> None:
    texts = {"stdout": run.stdout, "stderr": run.stderr}
    if folder is not None:
        texts.update({path.name: path.read_text(errors="replace") for path in folder.glob("*.log")})
    for where, text in texts.items():
        assert TRACEBACK not in text, f"traceback in {where}:\n{text[-3000:]}"


def assert_complete_results(folder: Path) -> dict:
    """report.html, stats_stats.csv, summary.json and junit.xml exist and parse; returns the summary."""
    for name in REQUIRED_FILES:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 0, f"{name} missing or empty in {folder}"
    assert "<html" in (folder / "report.html").read_text(errors="replace")[:2000].lower()
    with open(folder / "stats_stats.csv", newline="") as handle:
        names = [row["Name"] for row in csv.DictReader(handle)]
    assert "Aggregated" in names
    ET.parse(folder / "junit.xml")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["totals"]["requests"] > 0
    return summary


def failure_messages(folder: Path) -> list[str]:
    with open(folder / "stats_failures.csv", newline="") as handle:
        return [row["Error"] for row in csv.DictReader(handle)]


def exception_rows(folder: Path) -> list[dict]:
    with open(folder / "stats_exceptions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines}"
    return lines[0]


class Service:
    """The reference service on a fixed port and database, so it can be killed and started again in place."""

    def __init__(self, tmp_path: Path, port: int, db: Path) -> None:
        self.tmp_path, self.port, self.db = tmp_path, port, db
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, reset: bool) -> Path:
        """Start it (access log on); returns the log file once /health answers."""
        self.starts += 1
        log = self.tmp_path / f"service-{self.starts}.log"
        cmd = [sys.executable, "-m", "product_service", "--host", "127.0.0.1", "--port", str(self.port),
               "--db", str(self.db), "--access-log", *(["--reset"] if reset else [])]
        with open(log, "wb") as handle:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        wait_until(lambda: self.proc.poll() is not None or _healthy(self.url), 20, "the service to listen")
        assert self.proc.poll() is None, log.read_text()
        return log

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def served_requests(log: Path) -> int:
    """Requests in an access log, the health probe excluded."""
    lines = log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if '"' in line and " HTTP/1.1" in line and "/health" not in line)


@pytest.fixture
def service(tmp_path):
    handle = Service(tmp_path, free_port(), tmp_path / "products.db")
    yield handle
    handle.stop()


# Row 1: target unreachable at start ------------------------------------------------------------------

@pytest.fixture
def stalled_port():
    """A port whose kernel backlog accepts connections that nobody ever answers."""
    import socket
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["nothing_listening", "accepts_never_answers"])
def test_unreachable_target_exits_3_before_any_traffic(suite, target, stalled_port):
    port = free_port() if target == "nothing_listening" else stalled_port
    host = f"http://127.0.0.1:{port}"
    run = suite("headless", "2", "3", host, "--no-analysis")
    code = run.wait(timeout=30)
    assert code == 3
    # One line names the cause; before it, one note that the start-up wait began (issue 31: it says how long).
    waiting = [line for line in run.stderr.splitlines() if "asking again for up to" in line]
    assert len(waiting) <= 1
    line = one_line("\n".join(line for line in run.stderr.splitlines() if line not in waiting))
    assert "unreachable" in line and host in line
    assert run.stdout == ""
    assert_no_traceback(run)
    written = [p.name for p in run.results_root.rglob("*") if p.is_file()]
    assert written == [], f"an unreachable target must not produce run files: {written}"


@pytest.mark.e2e
def test_unreachable_target_leaves_no_empty_folder_and_keeps_latest(suite, tmp_path):
    earlier = tmp_path / "results-run" / "20260101T000000Z"  # an earlier run's folder, the one latest points at
    earlier.mkdir(parents=True)
    (earlier.parent / "latest").symlink_to(earlier.name)
    run = suite("headless", "2", "3", f"http://127.0.0.1:{free_port()}", "--no-analysis", name="run")
    assert run.wait(timeout=30) == 3
    assert sorted(p.name for p in run.results_root.iterdir()) == ["20260101T000000Z", "latest"]
    assert os.readlink(run.results_root / "latest") == "20260101T000000Z"


@pytest.mark.e2e
def test_unreachable_message_says_refused_or_timed_out(suite, stalled_port):
    refused = suite("headless", "1", "1", f"http://127.0.0.1:{free_port()}", name="refused")
    silent = suite("headless", "1", "1", f"http://127.0.0.1:{stalled_port}", name="silent")
    assert refused.wait(timeout=30) == 3 and silent.wait(timeout=30) == 3
    assert "refused" in refused.stderr
    assert "timed out" in silent.stderr


# Row 2: target killed mid-run and restarted on the same port and database ------------------------------

@pytest.mark.e2e
def test_target_killed_and_restarted_mid_run_counts_connection_errors_and_resumes(suite, service, tmp_path):
    service.start(reset=True)
    run = suite("headless", "4", "9", service.url, "--no-analysis", "--config", str(write_config(tmp_path)))
    run.wait_for_output("All users spawned", timeout=30)
    time.sleep(1.5)
    service.kill()
    time.sleep(1.5)
    restarted_log = service.start(reset=False)
    code = run.wait(timeout=60)

    folder = run.folder()
    assert_no_traceback(run, folder)
    summary = assert_complete_results(folder)
    assert served_requests(restarted_log) > 20, "traffic did not resume after the restart"
    refused = [m for m in failure_messages(folder) if "connection: ConnectionRefusedError" in m]
    assert refused, f"no connection errors counted for the gap: {failure_messages(folder)}"
    assert exception_rows(folder) == []
    consistency = summary["consistency"]
    assert consistency["enabled"] and consistency["passed"] is not False, consistency
    assert consistency["violations"] == []
    assert consistency["inconclusive"] > 0, "buys lost in the gap must make their products inconclusive"
    # The gap's failures break the default 1 % error-rate threshold, and only that.
    assert code == summary["verdict"]["exit_code"] == 1
    assert all("error_rate" in reason for reason in summary["verdict"]["reasons"]), summary["verdict"]
    assert "error_rate" in run.stdout


# Row 3: faults through the proxy ----------------------------------------------------------------------

FAULT_SCHEDULE = (  # (mode, seconds), after a pass phase that fills the product cache; the faults that hold
    # users for a whole request timeout come last, so every other fault meets requests
    ("error500", 0.8), ("reset", 0.8), ("html", 0.8), ("truncated", 0.8), ("cut", 0.6), ("slow", 1.5),
    ("stall", 1.3), ("pass", 0.0),
)
EXPECTED_REASONS = {  # fault -> a failure text the validators must have recorded for it
    "error500": "saw 500",
    "slow": "timeout: no response within the request timeout",
    "reset": "connection:",
    "html": "content_type: expected application/json, saw text/html",
    "truncated": "json: expected a JSON body, saw invalid JSON",
}

COMPLETE_WRONG_ANSWERS = ("error500", "html", "truncated")


@pytest.mark.e2e
@pytest.mark.parametrize("client", ["fast", "requests"])
def test_faults_are_failures_with_their_reason_and_no_exception_escapes(suite, product_service, tmp_path, client):
    with FaultProxy(product_service.port, delay_s=2.0) as proxy:
        analysis = [] if client == "fast" else ["--no-analysis"]  # one run also checks the analysis copes
        run = suite("headless", "4", "10", proxy.url, "--client", client, *analysis,
                    "--config", str(write_config(tmp_path)))
        wait_until(lambda: proxy.requests["pass"] > 20 or run.proc.poll() is not None, 30, "traffic")
        for mode, seconds in FAULT_SCHEDULE:
            proxy.set_mode(mode)
            time.sleep(seconds)
        code = run.wait(timeout=60)
        seen = dict(proxy.requests)

    folder = run.folder()
    assert_no_traceback(run, folder)
    summary = assert_complete_results(folder)
    for mode, _ in FAULT_SCHEDULE:
        assert seen.get(mode, 0) > 0, f"no request met the {mode} fault: {seen}"
    messages = failure_messages(folder)
    for mode, reason in EXPECTED_REASONS.items():
        assert any(reason in message for message in messages), f"{mode}: no failure {reason!r} in {messages}"
    assert exception_rows(folder) == [], "an exception escaped a task"
    # What the proxy counted bounds what Locust may count, whatever the client does after a reset or a cut
    # (the fast client resends once on a fresh connection, so one task request can meet the proxy twice):
    # a success needs an answer the proxy passed through, and every complete wrong answer (500, HTML,
    # truncated JSON: well-formed HTTP that no client resends) is exactly one failure.
    totals = summary["totals"]
    assert totals["requests"] - totals["failures"] <= seen["pass"], f"a fault was counted as a success: {seen}"
    assert totals["failures"] >= sum(seen.get(mode, 0) for mode in COMPLETE_WRONG_ANSWERS), (totals, seen)
    assert summary["consistency"]["passed"] is not False, summary["consistency"]
    assert code == summary["verdict"]["exit_code"] == 1
    if client == "fast":
        assert (folder / "summary.md").is_file(), "the analysis did not run on a failure-heavy run"
        assert "analysis failed" not in run.stderr


@pytest.mark.parametrize("client", [
    "fast",
    "requests",
])
def test_body_cut_short_by_the_connection_is_a_connection_failure(client):
    """200 announcing more body than arrives before the connection closes: the network, not the JSON, is at fault."""
    from locust import FastHttpUser, HttpUser, constant, task
    from locust.env import Environment

    import gevent
    from validators import expect_product_list

    class Browser(FastHttpUser if client == "fast" else HttpUser):
        wait_time = constant(0.05)

        @task
        def browse(self):
            with self.client.get("/products", name="Get_All_Products", catch_response=True) as resp:
                expect_product_list(resp)

    with FaultProxy(free_port(), mode="cut") as proxy:
        environment = Environment(user_classes=[Browser], host=proxy.url)
        runner = environment.create_local_runner()
        runner.start(1, spawn_rate=10)
        gevent.sleep(0.5)
        runner.quit()
    errors = [str(entry.error) for entry in environment.stats.errors.values()]
    assert proxy.requests["cut"] > 0 and errors
    assert all("connection:" in error for error in errors), errors


@pytest.mark.e2e
def test_service_error_rate_500s_are_failures_not_crashes(suite, service_factory, tmp_path):
    faulty = service_factory("--error-rate", "0.3")
    run = suite("headless", "3", "3", faulty.url, "--no-analysis", "--config", str(write_config(tmp_path)))
    code = run.wait(timeout=60)
    folder = run.folder()
    assert_no_traceback(run, folder)
    summary = assert_complete_results(folder)
    assert any("saw 500 UNKNOWN_ERROR" in message for message in failure_messages(folder))
    assert exception_rows(folder) == []
    assert summary["consistency"]["passed"] is not False
    assert code == summary["verdict"]["exit_code"] == 1


# Row 6: interrupts --------------------------------------------------------------------------------

@dataclass
class Interrupted:
    run: SuiteRun
    mode: str
    code: int
    took_s: float
    survivors: list
    folder: Path


INTERRUPTS = [(mode, signum) for signum in (signal.SIGINT, signal.SIGTERM) for mode in ("headless", "distributed")]


@pytest.fixture(scope="module", params=INTERRUPTS, ids=[f"{m}-{s.name}" for m, s in INTERRUPTS])
def interrupted(request, tmp_path_factory):
    """A run interrupted by SIGINT or SIGTERM to the run_tests.sh process alone, once traffic flows."""
    mode, signum = request.param
    base = tmp_path_factory.mktemp(f"interrupt-{mode}-{signum.name}")
    launcher = Launcher(base)
    try:
        args = ["headless", "4", "120"] if mode == "headless" else ["distributed", "2", "4", "120"]
        run = launcher(*args, "--no-analysis", "--config", str(write_config(base)))
        run.wait_for_output("All users spawned", timeout=40)
        time.sleep(1.0)
        started_by_run = run.session_processes()
        assert len(started_by_run) >= (3 if mode == "headless" else 5), started_by_run  # sh, service, locust(es)
        signalled = time.monotonic()
        os.kill(run.proc.pid, signum)
        code = run.wait(timeout=STOP_TIMEOUT_S + 30)
        took = time.monotonic() - signalled
        survivors = [p for p in started_by_run if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        yield Interrupted(run, mode, code, took, survivors + run.session_processes(), run.folder())
    finally:
        launcher.cleanup()


@pytest.mark.e2e
def test_interrupt_stops_in_time_leaves_no_process_and_keeps_results(interrupted):
    # Users stop within the stop timeout; the oracle's final snapshot and the reports take a few seconds more.
    assert interrupted.took_s < STOP_TIMEOUT_S + 12, f"took {interrupted.took_s:.1f} s to stop"
    assert interrupted.survivors == [], f"orphans: {interrupted.survivors}"
    summary = assert_complete_results(interrupted.folder)
    assert summary["interrupted"] is True
    assert interrupted.code == summary["verdict"]["exit_code"]
    assert summary["consistency"]["passed"] is not False
    if interrupted.mode == "distributed":
        assert summary["workers"]["count"] == 2 and summary["workers"]["lost"] == []
        assert not any("did not report" in note for note in summary["consistency"]["notes"]), \
            "a worker's oracle records were lost on the interrupt"


@pytest.mark.e2e
def test_interrupt_prints_no_traceback(interrupted):
    assert_no_traceback(interrupted.run, interrupted.folder)


# Row 7: a worker killed mid-run -----------------------------------------------------------------------

@dataclass
class LostWorker:
    run: SuiteRun
    code: int
    killed_at: float
    folder: Path


@pytest.fixture(scope="module")
def lost_worker(tmp_path_factory):
    """A 2-worker run of 13 s in which one worker is killed (SIGKILL) 1 s after all users spawned.

    Locust marks a worker missing once HEARTBEAT_LIVENESS (3) heartbeats of HEARTBEAT_INTERVAL (1 s) are
    overdue (locust/runners.py): about 4-5 s after the kill, which leaves several seconds of run after it.
    """
    base = tmp_path_factory.mktemp("lost-worker")
    launcher = Launcher(base)
    try:
        run = launcher("distributed", "2", "4", "13", "--no-analysis", "--config", str(write_config(base)))
        run.wait_for_output("All users spawned", timeout=40)
        time.sleep(1.0)
        workers = [p for p in psutil.Process(run.proc.pid).children(recursive=True) if "--worker" in p.cmdline()]
        assert len(workers) == 2, workers
        workers[0].kill()
        killed_at = time.time()
        code = run.wait(timeout=90)
        yield LostWorker(run, code, killed_at, run.folder())
    finally:
        launcher.cleanup()


@pytest.mark.e2e
def test_worker_killed_mid_run_master_carries_on_and_records_the_loss(lost_worker):
    run, folder = lost_worker.run, lost_worker.folder
    assert_no_traceback(run, folder)
    summary = assert_complete_results(folder)
    assert "failed to send heartbeat, setting state to missing" in run.stderr
    assert "The last worker went missing" not in run.stderr
    assert len(summary["workers"]["lost"]) == 1, summary["workers"]
    assert summary["workers"]["count"] == 2
    assert summary["interrupted"] is False
    assert summary["duration_s"] >= 12, "the master stopped early instead of carrying on"
    assert summary["consistency"]["passed"] is not False
    assert lost_worker.code == summary["verdict"]["exit_code"]
    with open(folder / "stats_stats_history.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    after_loss = [int(row["Total Request Count"]) for row in rows if float(row["Timestamp"]) > lost_worker.killed_at + 5]
    assert len(after_loss) >= 2 and after_loss[-1] > after_loss[0], "no traffic after the worker was declared lost"


@pytest.mark.e2e
def test_lost_worker_does_not_delay_the_end_of_the_run(lost_worker):
    lines = lost_worker.run.stderr.splitlines()
    ended = _log_time(next(line for line in lines if "--run-time limit reached" in line))
    checked = _log_time(next(line for line in lines if "inventory_oracle: consistency" in line))
    assert checked - ended < 5, f"the oracle waited {checked - ended:.1f} s for a worker known to be lost"


def _log_time(line: str) -> float:
    """Seconds since midnight of a Locust log line "[2026-11-25 14:24:06,221] ..."."""
    match = re.search(r"(\d\d):(\d\d):(\d\d),(\d{3})\]", line)
    assert match, line
    hours, minutes, seconds, millis = (int(part) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


# Row 9: security ---------------------------------------------------------------------------------

TOKEN = "secret-xyz"


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory):
    """A 4 s headless run with InfluxDB streaming on, INFLUXDB_TOKEN set, and nothing listening at the URL."""
    base = tmp_path_factory.mktemp("monitored")
    launcher = Launcher(base)
    try:
        config = write_config(base, {"monitoring": {"influxdb": {
            "enabled": True, "url": f"http://127.0.0.1:{free_port()}", "flush_interval_seconds": 0.5,
            "write_timeout_seconds": 0.5}}})
        run = launcher("headless", "3", "4", "--config", str(config), env={"INFLUXDB_TOKEN": TOKEN})
        code = run.wait(timeout=90)
        yield run, code, run.folder()
    finally:
        launcher.cleanup()


@pytest.mark.e2e
def test_influxdb_token_never_appears_in_output_or_results(monitored_run):
    run, code, folder = monitored_run
    assert_no_traceback(run, folder)
    summary = assert_complete_results(folder)
    assert summary["monitoring"] is not None and summary["monitoring"]["write_errors"] > 0, summary["monitoring"]
    assert code == summary["verdict"]["exit_code"] == 0, "a dead metrics server must not fail the load test"
    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    leaked = [p.name for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == [], f"the token leaked into {leaked}"


@pytest.mark.e2e
def test_headless_run_lasts_its_full_duration(monitored_run):
    run, _code, folder = monitored_run
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["duration_s"] >= 3.8, f"a 4 s run lasted {summary['duration_s']} s"


@pytest.mark.e2e
def test_web_ui_binds_to_loopback_by_default(suite, product_service):
    port = free_port()
    run = suite("ui", product_service.url, env={"WEB_PORT": str(port)})

    def listening() -> list:
        found = []
        for process in run.session_processes():
            try:
                found += [c for c in process.net_connections(kind="tcp")
                          if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
            except psutil.Error:
                continue
        return found

    wait_until(lambda: listening() or run.proc.poll() is not None, 40, "the web UI to listen", interval=0.2)
    addresses = {c.laddr.ip for c in listening()}
    os.kill(run.proc.pid, signal.SIGTERM)
    run.wait(timeout=30)
    assert addresses == {"127.0.0.1"}


def _sql_argument_problems(path: Path) -> list[str]:
    """execute()/executemany() calls whose SQL is built from anything but literals and UPPER_CASE constants."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany", "executescript") and node.args):
            continue
        sql = node.args[0]
        if isinstance(sql, ast.Constant) and isinstance(sql.value, str):
            continue
        if isinstance(sql, ast.Name) and sql.id.isupper():
            continue
        if isinstance(sql, ast.JoinedStr) and all(
                isinstance(part, ast.Constant) or (isinstance(part, ast.FormattedValue)
                                                   and isinstance(part.value, ast.Name) and part.value.id.isupper())
                for part in sql.values):
            continue
        problems.append(f"{path.name}:{node.lineno}: {ast.unparse(sql)}")
    return problems


def test_every_sql_statement_of_the_service_is_parameterised():
    files = sorted((ROOT / "product_service").glob("*.py"))
    calls = sum(src.count(".execute") for src in (f.read_text() for f in files))
    assert calls > 5, "no SQL found: the check would prove nothing"
    problems = [problem for path in files for problem in _sql_argument_problems(path)]
    assert problems == [], f"SQL built from variables (use ? placeholders): {problems}"
