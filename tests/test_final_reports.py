"""Every worker's last requests reach the master's verdict: however the run ends, summary.json counts exactly the
requests the workers made (Locust sends a worker's last statistics only after the master has read them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

# Each process counts the requests it logged (Locust's request event, the same one its statistics count). A
# worker takes 1.5 s to stop, as one does whose users finish slow requests within --stop-timeout: Locust's master
# waits 0.5 s for the workers' last statistics after it has sent them `quit`.
PROBE = '''
import json, os
import gevent
from locust import events
from locust.runners import WorkerRunner

COUNT = [0]

@events.request.add_listener
def _count(**_kwargs):
    COUNT[0] += 1

@events.test_stop.add_listener
def _slow_stop(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner):
        gevent.sleep(1.5)

@events.quitting.add_listener
def _dump(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner):
        with open(f"{os.environ['PROBE_DIR']}/worker-{os.getpid()}.json", "w") as out:
            json.dump(COUNT[0], out)
'''

QUIET = ("wait_time: {min_seconds: 0.01, max_seconds: 0.05}\n"
         "thresholds: {error_rate: null, p95_ms: null, p99_ms: null, consistency: false}\n"
         "oracle: {enabled: false}\n")


@pytest.mark.e2e
def test_the_master_counts_every_request_the_workers_made(tmp_path, product_service):
    """-t ends the run; the master's own SIGTERM and a shape's end take the same path (MasterRunner.quit)."""
    (tmp_path / "config.yaml").write_text(QUIET)
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "CONFIG_PATH": str(tmp_path / "config.yaml"), "PYTHONPATH": str(ROOT),
           "PROBE_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "locust", "-f", f"locustfile.py,{tmp_path / 'probe.py'}", "--headless",
               "-t", "5s", "-u", "4", "-r", "20", "--host", product_service.url, "--tags", "health",
               "--results-dir", str(tmp_path), "--only-summary", "--processes", "2"]
    master = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = master.communicate(timeout=60)
    finally:
        if master.poll() is None:
            master.kill()
            master.communicate(timeout=10)
    made = [json.loads(path.read_text()) for path in tmp_path.glob("worker-*.json")]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(made) == 2, log[-2000:]
    assert sum(made) > 50, made  # load did run on both workers
    assert summary["totals"]["requests"] == sum(made), (summary["totals"], made, log[-2000:])
    assert summary["workers"]["lost"] == []
