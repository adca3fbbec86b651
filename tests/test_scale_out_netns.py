"""Scale-out under a network fault (docs/reliability.md row 14): master and workers in network namespaces.

The test builds its own network and removes it afterwards: a namespace for the master and the reference
service, one per worker, a veth pair from each worker to the master's namespace (10.215.N.0/24), and the
service and master reached by every worker at 10.215.0.1 (on the master's loopback). A link is cut with
`ip link set DEV down` (tc netem is not available here). Worker 1 is cut off for 10 s and comes back;
then worker 2 is cut off for good. The run must complete, the verdict must name what was lost, and the
oracle must count every record it received exactly once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT
from test_fault_matrix import TRACEBACK, wait_until, write_config

SERVICE_ADDRESS = "10.215.0.1"
MASTER_PORT = 5557
SERVICE_PORT = 8082
CUT_S = 10
RUN_S = 32


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"ls15probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()} (needs root)"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


class Network:
    """Namespaces m (master + service), w1, w2 with veth links; removed by remove()."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:5]
        self.master = f"ls15m{tag}"
        self.workers = [f"ls15w1{tag}", f"ls15w2{tag}"]
        self.links = [(f"m1{tag}", f"w1{tag}"), (f"m2{tag}", f"w2{tag}")]  # (master end, worker end)

    def build(self) -> None:
        ip("netns", "add", self.master)
        ip("-n", self.master, "link", "set", "lo", "up")
        ip("-n", self.master, "addr", "add", f"{SERVICE_ADDRESS}/32", "dev", "lo")
        for number, (worker, (master_end, worker_end)) in enumerate(zip(self.workers, self.links), start=1):
            ip("netns", "add", worker)
            ip("-n", worker, "link", "set", "lo", "up")
            ip("link", "add", master_end, "type", "veth", "peer", "name", worker_end)
            ip("link", "set", master_end, "netns", self.master)
            ip("link", "set", worker_end, "netns", worker)
            ip("-n", self.master, "addr", "add", f"10.215.{number}.1/24", "dev", master_end)
            ip("-n", worker, "addr", "add", f"10.215.{number}.2/24", "dev", worker_end)
            ip("-n", self.master, "link", "set", master_end, "up")
            ip("-n", worker, "link", "set", worker_end, "up")
            ip("-n", worker, "route", "add", "default", "via", f"10.215.{number}.1")

    def cut(self, number: int) -> None:
        ip("-n", self.workers[number - 1], "link", "set", self.links[number - 1][1], "down")

    def mend(self, number: int) -> None:
        ip("-n", self.workers[number - 1], "link", "set", self.links[number - 1][1], "up")
        ip("-n", self.workers[number - 1], "route", "replace", "default", "via", f"10.215.{number}.1")

    def remove(self) -> None:
        for name in (*self.workers, self.master):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture
def network():
    why = netns_available()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    net = Network()
    try:
        net.build()
        yield net
    finally:
        net.remove()


def in_namespace(namespace: str, cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(["ip", "netns", "exec", namespace, *cmd], cwd=ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@pytest.mark.e2e
def test_worker_cut_off_for_10_s_and_one_cut_off_for_good_the_run_completes_and_names_the_loss(network, tmp_path):
    env = {**os.environ, "USE_SYSTEM_PYTHON": "1", "PYTHON": sys.executable, "STOP_TIMEOUT": "3",
           "MASTER_PORT": str(MASTER_PORT), "RESULTS_ROOT": str(tmp_path / "results")}
    config = write_config(tmp_path)
    host = f"http://{SERVICE_ADDRESS}:{SERVICE_PORT}"
    procs: list[subprocess.Popen] = []
    logs = {name: tmp_path / f"{name}.log" for name in ("service", "master", "worker1", "worker2")}
    try:
        procs.append(in_namespace(network.master, [sys.executable, "-m", "product_service", "--host", "0.0.0.0",
                                                   "--port", str(SERVICE_PORT), "--db", str(tmp_path / "db"),
                                                   "--reset"], logs["service"], env))
        wait_until(lambda: "listening on" in read(logs["service"]), 20, "the service to listen", interval=0.1)
        master = in_namespace(network.master, [str(ROOT / "run_tests.sh"), "master", "4", str(RUN_S), host,
                                               "--no-analysis", "--config", str(config)], logs["master"],
                              {**env, "EXPECT_WORKERS": "2", "MASTER_BIND_HOST": "0.0.0.0"})
        procs.append(master)
        for number in (1, 2):
            procs.append(in_namespace(network.workers[number - 1], [str(ROOT / "run_tests.sh"), "worker",
                                                                    SERVICE_ADDRESS, "--config", str(config)],
                                      logs[f"worker{number}"], env))
        wait_until(lambda: "All users spawned" in read(logs["master"]) or master.poll() is not None, 60,
                   "all users to spawn", interval=0.2)
        time.sleep(1.0)
        network.cut(1)
        time.sleep(CUT_S)
        network.mend(1)
        wait_until(lambda: "self-healed" in read(logs["master"]) or master.poll() is not None, 20,
                   "worker 1 to come back", interval=0.2)
        time.sleep(1.0)
        network.cut(2)  # for good
        code = master.wait(timeout=RUN_S + 60)
    finally:
        for proc in reversed(procs):
            stop(proc)

    master_log = read(logs["master"])
    assert TRACEBACK not in master_log, master_log[-3000:]
    assert "self-healed" in master_log, "worker 1 never came back after its 10 s cut"
    folder = next(p for p in (tmp_path / "results").iterdir() if p.is_dir() and not p.is_symlink())
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is False and summary["duration_s"] >= RUN_S - 1, "the run did not complete"
    assert code == summary["verdict"]["exit_code"], (code, summary["verdict"])
    workers = [wid for wid in re.findall(r"Worker (\S+) failed to send heartbeat", master_log)]
    assert len(set(workers)) == 2, f"both cuts must be noticed: {workers}"
    lost = summary["workers"]["lost"]
    assert len(lost) == 1, summary["workers"]
    # The verdict names the loss: the lost worker and that its oracle records never arrived.
    assert any(lost[0] in line for line in summary["lost"]), summary["lost"]
    assert summary["consistency"]["passed"] is not True, "a lost worker's buys are unknown: not a pass"
    # Every record counted exactly once: what the reconnected worker says it sent is what the master counted.
    records = summary["consistency"]["records_by_source"]
    sent = {}
    for number in (1, 2):
        match = re.search(r"inventory oracle: sent (\d+) records to the master as (\S+)", read(logs[f"worker{number}"]))
        if match:
            sent[match.group(2)] = int(match.group(1))
    back = [wid for wid in sent if wid != lost[0]]
    assert back, f"the reconnected worker sent no records: {sent}"
    for wid in back:
        assert records.get(wid) == sent[wid], (wid, sent, records)
    assert records.get(lost[0], 0) == 0 or records[lost[0]] <= sent.get(lost[0], 0)
    assert summary["consistency"]["duplicate_chunks"] == 0
