"""The second fault matrix (issue 15, docs/reliability.md rows 10-13): every phase of a run is bounded, a
signal works in every phase, Locust's death and a full or read-only disk still leave a verdict.

Real processes only: run_tests.sh as a user starts it, the reference service, tests/fault_proxy.py in front
of it answering `/products` one byte at a time (`trickle`), a tmpfs of a few hundred KiB for the full disk.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from conftest import ROOT
from fault_proxy import FaultProxy
from test_fault_matrix import (STOP_TIMEOUT_S, TRACEBACK, assert_no_traceback, suite, wait_until,  # noqa: F401
                               write_config)

SNAPSHOT_DEADLINE_S = 5  # oracle.install's http_timeout_s: the start and the end snapshot, each
TRICKLE_BYTE_S = 0.5  # one byte every half second: every read succeeds, no answer ever completes


def locust_processes(run) -> list[psutil.Process]:
    return [p for p in run.session_processes() if p.cmdline()[1:3] == ["-m", "locust"]]


@pytest.fixture
def trickling(product_service):
    """A proxy that answers /products one byte at a time and passes everything else."""
    with FaultProxy(product_service.port, mode="trickle", delay_s=TRICKLE_BYTE_S, only_path="/products") as proxy:
        yield proxy


@pytest.mark.e2e
def test_byte_at_a_time_products_cannot_stall_the_run_and_the_lost_setup_time_is_reported(suite, trickling, tmp_path):
    started = time.monotonic()
    run = suite("headless", "2", "8", trickling.url, "--no-analysis", "--config", str(write_config(tmp_path)))
    code = run.wait(timeout=90)
    took = time.monotonic() - started
    folder = run.folder()
    assert_no_traceback(run, folder)
    summary = json.loads((folder / "summary.json").read_text())
    ET.parse(folder / "junit.xml")
    # Bounded: -t 8, the start snapshot (5 s, inside -t), users stuck in /products stopped after STOP_TIMEOUT,
    # the end snapshot (5 s), process start-up and the reports.
    assert took < 8 + STOP_TIMEOUT_S + SNAPSHOT_DEADLINE_S + 15, f"took {took:.1f} s"
    assert summary["setup_s"] >= SNAPSHOT_DEADLINE_S - 1, summary
    assert summary["load_s"] <= summary["duration_s"] - (SNAPSHOT_DEADLINE_S - 1), summary
    assert abs(summary["load_s"] + summary["setup_s"] - summary["duration_s"]) < 0.5, summary
    assert summary["consistency"]["passed"] is None, "no start snapshot: the oracle cannot decide"
    assert code == summary["verdict"]["exit_code"]


@pytest.mark.e2e
def test_sigterm_during_the_start_snapshot_starts_no_user_and_keeps_the_verdict(suite, trickling, tmp_path):
    run = suite("headless", "2", "60", trickling.url, "--no-analysis", "--config", str(write_config(tmp_path)))
    run.wait_for_output("Run time limit set", timeout=40)
    time.sleep(1.0)  # inside the 5 s start snapshot
    signalled = time.monotonic()
    os.kill(run.proc.pid, signal.SIGTERM)
    code = run.wait(timeout=60)
    took = time.monotonic() - signalled
    folder = run.folder()
    assert_no_traceback(run, folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert took < STOP_TIMEOUT_S + 2 * SNAPSHOT_DEADLINE_S + 8, f"took {took:.1f} s"
    assert summary["interrupted"] is True
    assert summary["totals"]["requests"] == 0, "users started after the signal"
    assert trickling.requests["pass"] == 1, f"only run_tests.sh's health check may pass: {dict(trickling.requests)}"
    assert code == summary["verdict"]["exit_code"]
    assert run.session_processes() == []


@pytest.mark.e2e
def test_sigterm_during_the_end_snapshot_lets_the_oracle_and_reports_finish(suite, product_service, tmp_path):
    with FaultProxy(product_service.port, delay_s=TRICKLE_BYTE_S, only_path="/products") as proxy:
        run = suite("headless", "2", "4", proxy.url, "--no-analysis", "--config", str(write_config(tmp_path)))
        run.wait_for_output("All users spawned", timeout=40)
        # Some requests must be answered before every /products... request trickles (a busy machine once had
        # none between the spawn and the switch): at least 10 seen, which pass straight through.
        wait_until(lambda: proxy.requests["pass"] >= 10, 20, "10 requests through the proxy before the trickle")
        proxy.set_mode("trickle")  # from now on the end snapshot takes its whole 5 s deadline
        run.wait_for_output("--run-time limit reached", timeout=30)
        time.sleep(1.0)
        signalled = time.monotonic()
        os.kill(run.proc.pid, signal.SIGTERM)
        code = run.wait(timeout=60)
        took = time.monotonic() - signalled
    folder = run.folder()
    assert_no_traceback(run, folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["totals"]["requests"] > 0 and (folder / "junit.xml").is_file() and (folder / "report.html").is_file()
    assert code == summary["verdict"]["exit_code"] in (0, 1)
    assert summary["interrupted"] is False, "the load had run its full -t before the signal"
    assert "interrupt: the run is already ending" in run.stderr
    assert took < SNAPSHOT_DEADLINE_S + STOP_TIMEOUT_S + 8, f"took {took:.1f} s"
    assert run.session_processes() == []


@pytest.mark.e2e
def test_second_signal_exits_at_once_with_one_line_and_leaves_no_process(suite, trickling, tmp_path):
    run = suite("headless", "2", "60", trickling.url, "--no-analysis", "--config", str(write_config(tmp_path)))
    run.wait_for_output("Run time limit set", timeout=40)
    started_by_run = run.session_processes()
    os.kill(run.proc.pid, signal.SIGTERM)
    time.sleep(1.0)  # the first one is being honoured: the start and end snapshots take seconds here
    assert run.proc.poll() is None
    second = time.monotonic()
    os.kill(run.proc.pid, signal.SIGTERM)
    code = run.wait(timeout=15)
    took = time.monotonic() - second
    assert took < 2.0, f"the second signal took {took:.1f} s"
    assert code == 130
    assert_no_traceback(run)
    notes = [line for line in run.stderr.splitlines() if "second interrupt" in line]
    assert len(notes) == 1 and notes[0].startswith("run_tests.sh: second interrupt: stopped at once"), run.stderr
    wait_until(lambda: not [p for p in started_by_run if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
               5, "every process of the run to be gone")


@pytest.mark.e2e
def test_locust_killed_still_leaves_summary_and_junit_and_exits_5(suite, product_service, tmp_path):
    run = suite("headless", "2", "60", product_service.url, "--no-analysis", "--config", str(write_config(tmp_path)))
    run.wait_for_output("All users spawned", timeout=40)
    time.sleep(1.5)  # Locust's CSV writer has written its once-a-second stats
    [locust] = locust_processes(run)
    locust.kill()
    code = run.wait(timeout=20)
    folder = run.folder()
    assert code == 5
    assert_no_traceback(run, folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == {"passed": False, "exit_code": 5, "reasons": summary["verdict"]["reasons"]}
    assert "killed by SIGKILL" in summary["verdict"]["reasons"][0] and summary["locust_died"]
    assert summary["totals"]["requests"] > 0, "the last statistics Locust wrote were not kept"
    suite_xml = ET.parse(folder / "junit.xml").getroot()
    assert suite_xml.get("failures") == "1" and "SIGKILL" in ET.tostring(suite_xml, encoding="unicode")
    said = [line for line in run.stderr.splitlines() if "killed by SIGKILL" in line]
    assert len(said) == 1 and "exit code 5" in said[0], run.stderr[-2000:]
    assert run.session_processes() == []


# A full or read-only disk --------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Write zeros until the disk is full (bounded by the disk's size)."""
    with open(disk / "filler", "wb") as handle:
        try:
            for _ in range(10_000):
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


@pytest.mark.e2e
def test_full_disk_still_prints_the_verdict_and_exits_4(suite, product_service, tmp_path, tiny_disk):
    run = suite("headless", "2", "5", product_service.url, "--no-analysis", "--config", str(write_config(tmp_path)),
                env={"RESULTS_ROOT": str(tiny_disk / "results")})
    run.wait_for_output("All users spawned", timeout=40)
    fill(tiny_disk)
    code = run.wait(timeout=60)
    assert code == 4, run.stderr[-3000:]
    assert_no_traceback(run)
    assert "=== Verdict" in run.stdout, "the verdict did not reach the console"
    said = [line for line in run.stderr.splitlines() if "results could not be written" in line]
    assert len(said) == 1 and "exit code 4" in said[0], run.stderr[-3000:]
    assert run.session_processes() == []


@pytest.mark.e2e
def test_read_only_results_disk_exits_4_before_any_traffic(suite, product_service, tiny_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with FaultProxy(product_service.port) as target:
        run = suite("headless", "1", "2", target.url, "--no-analysis", env={"RESULTS_ROOT": str(tiny_disk / "results")})
        code = run.wait(timeout=60)
        assert code == 4
        line = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(line) == 1 and "results could not be written" in line[0], line
        assert target.total_requests == 1, "only run_tests.sh's health check may reach the target"


@pytest.mark.e2e
@pytest.mark.parametrize("client", ["fast", "requests"])
def test_locust_run_directly_with_a_trailing_slash_host_sends_the_right_paths(product_service, tmp_path, client):
    """`locust -f locustfile.py --host http://127.0.0.1:PORT/`: the host is normalised like run_tests.sh's HOST."""
    folder = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "2", "-r", "2", "-t", "3",
         "--host", product_service.url + "/", "--csv", str(folder / "stats"), "--results-dir", str(folder)],
        cwd=ROOT, env={**os.environ, "CONFIG_PATH": str(write_config(tmp_path)), "SERVICE_CLIENT": client},
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert TRACEBACK not in result.stdout + result.stderr, result.stderr[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["host"] == product_service.url
    assert summary["totals"]["requests"] > 0 and summary["totals"]["failures"] == 0, summary["totals"]
    assert result.returncode == summary["verdict"]["exit_code"] == 0


@pytest.mark.e2e
def test_locust_run_directly_exits_at_once_on_a_second_interrupt(trickling, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "2", "-t", "60",
         "--host", trickling.url, "--results-dir", str(tmp_path / "results")],
        cwd=ROOT, env={**os.environ, "CONFIG_PATH": str(write_config(tmp_path))}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: trickling.requests["trickle"] > 0 or proc.poll() is not None, 30, "the start snapshot")
        proc.send_signal(signal.SIGINT)  # the first: the start snapshot still runs (5 s), then the end one
        time.sleep(1.0)
        assert proc.poll() is None
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
        took = time.monotonic() - second
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    assert proc.returncode == 130 and took < 2.0, (proc.returncode, took)
    assert TRACEBACK not in err
    assert [line for line in err.splitlines() if "second interrupt" in line] == [
        "second interrupt: stopped at once without waiting for users or reports"]
