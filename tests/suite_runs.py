"""Run ./run_tests.sh the way a user does and read what it leaves in its results folder.

Every run writes under the test's tmp_path (RESULTS_ROOT), is bounded by a timeout, and has its
process tree watched with psutil: the processes it started (service, master, workers) are listed
with the TCP peers they talked to, and anything still alive afterwards is reported and killed.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
RUN_TESTS = ROOT / "run_tests.sh"
# Settings a developer may have exported: a test run must not inherit them.
SUITE_ENV = ("CONFIG_PATH", "PRODUCT_SERVICE_URL", "LOAD_SHAPE", "SERVICE_CLIENT", "THRESHOLDS",
             "RESULTS_ROOT", "MASTER_PORT", "EXPECT_WORKERS", "WEB_HOST", "WEB_PORT", "USE_SYSTEM_PYTHON",
             "INFLUXDB_TOKEN", "LOCUST_HOST", "LOCUST_USERS", "LOCUST_RUN_TIME", "LOCUST_TAGS", "LOCUST_LOCUSTFILE")
SUMMARY_KEYS = {"run_id", "host", "started_at", "ended_at", "duration_s", "interrupted", "client", "shape",
                "users", "user_classes", "workers", "totals", "endpoints", "custom_stats", "thresholds",
                "consistency", "verdict"}
METRIC_KEYS = {"requests", "failures", "error_rate", "rps", "avg_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms"}
RESULT_FILES = ("report.html", "stats_stats.csv", "stats_stats_history.csv", "stats_failures.csv",
                "stats_exceptions.csv", "custom_report.csv", "summary.json", "junit.xml")

_RESULTS_LINE = re.compile(r"results in (\S+) \(exit code (\d+)\)")


@dataclass
class Child:
    """A process the run started, as seen while it ran."""

    pid: int
    cmdline: list[str]
    peers: set[int] = field(default_factory=set)  # remote ports of its TCP connections
    peak_rss: int = 0  # the most resident memory seen (bytes, sampled at 5 Hz)

    @property
    def role(self) -> str:
        line = " ".join(self.cmdline)
        if "product_service" in line:
            return "service"
        if "--worker" in self.cmdline:
            return "worker"
        if "--master" in self.cmdline:
            return "master"
        if "locust" in line:
            return "locust"
        return "other"


@dataclass
class SuiteRun:
    """One finished ./run_tests.sh invocation."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    results_root: Path
    children: dict[int, Child]
    survivors: list[str]  # processes of this run still alive after it exited (killed by us)

    @property
    def folder(self) -> Path:
        """The run's results folder, from its last line (or RESULTS_ROOT/latest)."""
        match = _RESULTS_LINE.search(self.stderr)
        if match:
            return Path(match.group(1))
        return (self.results_root / "latest").resolve()

    def summary(self) -> dict:
        return json.loads((self.folder / "summary.json").read_text(encoding="utf-8"))

    def stats(self) -> dict[str, dict]:
        """stats_stats.csv rows by request name (Aggregated included), counts as ints."""
        return stats_rows(self.folder / "stats_stats.csv")

    def failures(self) -> list[dict]:
        with open(self.folder / "stats_failures.csv", newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def custom_report(self) -> dict[tuple[str, str], int]:
        with open(self.folder / "custom_report.csv", newline="", encoding="utf-8") as f:
            return {(row["metric"], row["key"]): int(row["value"]) for row in csv.DictReader(f)}

    def role(self, role: str) -> list[Child]:
        return [child for child in self.children.values() if child.role == role]

    def explain(self) -> str:
        """What to print when an assertion about this run fails."""
        return (f"./run_tests.sh {' '.join(self.args)} -> exit {self.returncode} in {self.seconds:.1f}s\n"
                f"--- stderr (tail)\n{self.stderr[-3000:]}\n--- stdout (tail)\n{self.stdout[-3000:]}")


def stats_rows(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        row["Request Count"] = int(row["Request Count"])
        row["Failure Count"] = int(row["Failure Count"])
        out[row["Name"]] = row
    return out


def write_config(folder: Path, data: dict, name: str = "config.yaml") -> Path:
    """A config file for --config (only the keys given; everything else takes its default)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def suite_env(results_root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in SUITE_ENV}
    env["RESULTS_ROOT"] = str(results_root)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _watch(proc: psutil.Process, children: dict[int, Child]) -> None:
    """Note the run's descendants and whom they talk to (a snapshot; cheap enough at 5 Hz)."""
    try:
        descendants = proc.children(recursive=True)
    except psutil.Error:
        return
    for child in descendants:
        try:
            known = children.get(child.pid)
            if known is None:
                known = children[child.pid] = Child(child.pid, child.cmdline())
            known.peak_rss = max(known.peak_rss, child.memory_info().rss)
            for conn in child.net_connections(kind="tcp"):
                if conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                    known.peers.add(conn.raddr.port)
        except psutil.Error:
            continue


def _kill_survivors(children: dict[int, Child]) -> list[str]:
    survivors = []
    for child in children.values():
        try:
            process = psutil.Process(child.pid)
            if process.cmdline() != child.cmdline or process.status() == psutil.STATUS_ZOMBIE:
                continue  # gone (or the pid was reused by something else)
        except psutil.Error:
            continue
        survivors.append(f"{child.pid} {' '.join(child.cmdline)[:120]}")
        try:
            process.kill()
        except psutil.Error:
            pass
    return survivors


def run_suite(*args: str, results_root: Path, env: dict[str, str] | None = None, timeout: float = 90.0,
              settle: float = 1.0) -> SuiteRun:
    """./run_tests.sh ARGS with RESULTS_ROOT=results_root; waits at most `timeout` seconds.

    After it exits, waits up to `settle` seconds for its processes to go, then lists and kills any left.
    """
    results_root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    popen = subprocess.Popen([str(RUN_TESTS), *args], cwd=ROOT, env=suite_env(results_root, env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    children: dict[int, Child] = {}
    watched = psutil.Process(popen.pid)
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((popen.stdout, out_chunks), (popen.stderr, err_chunks))]
    for reader in readers:
        reader.start()
    try:
        while popen.poll() is None:
            if time.monotonic() - started > timeout:
                os.killpg(popen.pid, signal.SIGTERM)  # the session we created: only this run's processes
                try:
                    popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(popen.pid, signal.SIGKILL)
                    popen.wait(timeout=5)
                break
            _watch(watched, children)
            time.sleep(0.2)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(timeout=5)
    seconds = time.monotonic() - started
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) for pid in children):
        time.sleep(0.1)
    survivors = _kill_survivors(children)
    for reader in readers:  # a survivor holding the pipes is gone now
        reader.join(timeout=10)
    return SuiteRun(list(args), popen.returncode, "".join(out_chunks), "".join(err_chunks), seconds,
                    results_root, children, survivors)


def request_names(run: SuiteRun, with_requests: bool = True) -> set[str]:
    """Request names in stats_stats.csv (without the Aggregated row)."""
    return {name for name, row in run.stats().items()
            if name != "Aggregated" and (row["Request Count"] > 0 or not with_requests)}


def assert_summary_schema(summary: dict) -> None:
    """summary.json has every key of the documented schema, at the top and inside its sections."""
    assert SUMMARY_KEYS <= set(summary), SUMMARY_KEYS - set(summary)
    assert set(summary["users"]) >= {"peak", "final"} and set(summary["workers"]) >= {"count", "lost"}
    assert METRIC_KEYS <= set(summary["totals"])
    assert summary["endpoints"] and all(METRIC_KEYS | {"name", "method"} <= set(row) for row in summary["endpoints"])
    assert all({"metric", "scope", "limit", "observed", "passed"} <= set(row) for row in summary["thresholds"])
    assert {"enabled", "passed", "products_checked", "inconclusive", "violations", "dropped_records"} \
        <= set(summary["consistency"])
    assert set(summary["verdict"]) >= {"passed", "exit_code", "reasons"}
