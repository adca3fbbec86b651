"""The arrival-rate executor: its schedule, bound and dropped count on a fake clock; a stall and workers for real."""
from __future__ import annotations

import heapq
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from loadsuite.openmodel.executor import LOOKAHEAD_SECONDS as LOOKAHEAD, NUDGE_SECONDS as NUDGE, LateRequestEvent
from loadsuite.openmodel.schedule import Admission, ArrivalSchedule, claim, nudge, plan

from conftest import ROOT



def simulate(rate: float, seconds: float, duration, slots: int, bound: int):
    """Run the executor's slots and scheduler as events on a fake clock: the scheduler plans (plan()) when
    its timer fires or a slot nudges it (at most a second apart, as in the executor); a slot handed a start
    sleeps until it, then checks nudge() as it starts, and finishes `duration(start)` later, when it claims
    the next near start itself (claim()) or waits idle for one.

    Returns (intended starts in order, actual starts, admission, new slots made, scheduler wake-ups).
    """
    schedule, admission = ArrivalSchedule(), Admission(bound)
    schedule.set_rate(rate, 0.0)
    events: list[tuple[float, int, str, float]] = []  # (time, sequence, kind, intended start)
    sequence = iter(range(10**9))
    idle, new_slots, wakeups, plan_at = slots, 0, 0, 0.0
    intended, actual = [], []

    def push(at: float, kind: str, start: float = 0.0) -> None:
        heapq.heappush(events, (at, next(sequence), kind, start))

    push(0.0, "plan")
    while events:
        now, _, kind, start = heapq.heappop(events)
        if now >= seconds:
            break
        if kind == "plan":
            if now != plan_at:  # a timer or nudge overtaken by an earlier plan
                continue
            wakeups += 1
            to_idle, to_new, wake_at = plan(schedule, admission, now, idle, LOOKAHEAD, NUDGE)
            idle -= len(to_idle)
            new_slots += len(to_new)
            for handed in to_idle + to_new:
                push(max(now, handed), "start", handed)  # the slot sleeps until its start
            plan_at = min(now + 1.0, wake_at if wake_at is not None else now + 1.0)
            push(plan_at, "plan")
        elif kind == "start":
            intended.append(start)
            actual.append(now)
            admission.started(now - start)
            if nudge(schedule, now, NUDGE) and plan_at > now:
                plan_at = now
                push(now, "plan")
            push(now + duration(start), "finish")
        else:  # finish
            admission.finished()
            handed = claim(schedule, admission, now, LOOKAHEAD)  # the slot takes the next near start itself
            if handed is None:
                idle += 1
            else:
                push(max(now, handed), "start", handed)
    return intended, actual, admission, new_slots, wakeups


def fast(_start: float) -> float:
    return 0.005


def stalled(start: float) -> float:
    """The service is frozen from second 5 to second 8: everything sent then completes at 8."""
    return max(0.005, 8.0 - start) if 5.0 <= start < 8.0 else 0.005


def test_iterations_start_every_one_over_rate_seconds_without_drift():
    intended, actual, admission, new_slots, wakeups = simulate(100.0, 60.0, fast, slots=10, bound=1000)
    assert len(intended) == 6000
    assert intended == pytest.approx([k / 100.0 for k in range(6000)], abs=1e-9)
    assert actual == intended and admission.dropped == 0
    assert new_slots <= 100 * (LOOKAHEAD + 0.005) + 2  # just enough slots to hold the starts handed out early
    assert wakeups <= 60 + 1  # the slots claim every start: the scheduler wakes only for its once-a-second check


def test_below_one_start_per_nudge_margin_the_scheduler_times_its_own_plans():
    intended, actual, admission, _, wakeups = simulate(10.0, 60.0, fast, slots=2, bound=1000)
    assert intended == pytest.approx([k / 10.0 for k in range(600)], abs=1e-9)
    assert actual == intended and admission.dropped == 0
    assert 60 * 5 <= wakeups <= 60 * 11  # no slot sleeps for a start near enough to nudge: plans 5-10 times a second


def test_a_stall_does_not_delay_later_starts_new_slots_carry_them():
    intended, actual, admission, new_slots, _ = simulate(100.0, 10.0, stalled, slots=2, bound=1000)
    assert intended == pytest.approx([k / 100.0 for k in range(1000)], abs=1e-9)
    assert actual == pytest.approx(intended, abs=1e-9)  # nothing waited for the frozen service
    assert admission.dropped == 0 and admission.scheduled == 1000
    assert 290 <= new_slots <= 340 and 290 <= admission.peak_in_flight <= 340  # 3 s x 100/s in flight


def test_at_the_bound_due_iterations_are_dropped_and_counted_never_skipped_silently():
    intended, _, admission, _, _ = simulate(100.0, 10.0, stalled, slots=2, bound=50)
    assert admission.peak_in_flight == 50
    stalled_starts = [t for t in intended if 5.0 <= t < 8.0]
    assert len(stalled_starts) == 50  # the first 50 of the stall filled the bound
    assert admission.dropped == 300 - 50  # every later start of the stall: counted
    assert admission.scheduled == admission.started_count + admission.dropped == 1000
    assert [t for t in intended if t >= 8.0] == pytest.approx([k / 100.0 for k in range(800, 1000)], abs=1e-9)


def test_a_finishing_slot_claims_only_a_near_start_in_order_and_within_the_bound():
    schedule, admission = ArrivalSchedule(), Admission(2)
    schedule.set_rate(100.0, 0.0)
    assert claim(schedule, admission, 0.0, LOOKAHEAD) == 0.0
    assert claim(schedule, admission, 0.0, LOOKAHEAD) == pytest.approx(0.01)
    assert claim(schedule, admission, 0.0, LOOKAHEAD) is None  # two in flight: the bound; nothing is popped
    admission.finished()
    assert claim(schedule, admission, 0.0, LOOKAHEAD) == pytest.approx(0.02)
    assert admission.dropped == 0 and admission.in_flight == 2
    far = ArrivalSchedule()
    far.set_rate(1.0, 0.0)
    far.pop_due(0.0)                                       # the next start is 1 s away
    assert claim(far, Admission(10), 0.5, LOOKAHEAD) is None
    assert claim(far, Admission(10), 0.85, LOOKAHEAD) == 1.0


def test_a_rate_change_applies_from_the_last_start_without_a_burst():
    schedule = ArrivalSchedule()
    schedule.set_rate(10.0, 0.0)
    starts = [schedule.pop_due(t) for t in (0.0, 0.1, 0.2)]
    schedule.set_rate(100.0, 0.25)  # the next start is 0.25 (now), not 0.21 and not a catch-up burst
    assert schedule.pop_due(0.5) == pytest.approx(0.25)
    assert schedule.pop_due(0.5) == pytest.approx(0.26)
    schedule.set_rate(None, 0.3)
    assert schedule.pop_due(10.0) is None and schedule.next_due is None
    assert starts == pytest.approx([0.0, 0.1, 0.2])


def test_workers_counts_merge_on_the_master():
    master, worker_a, worker_b = Admission(10), Admission(5), Admission(5)
    for late in (0.001, 0.002, 0.250):
        assert worker_a.admit()
        worker_a.started(late)
    worker_b.dropped = 7
    payload = json.loads(json.dumps(worker_a.drain()))  # survives serialisation (msgpack is as strict)
    master.merge(payload)
    master.merge(worker_b.drain())
    master.merge({"dropped": "x", "lateness": [[1]]})  # malformed parts are ignored
    assert (master.started_count, master.dropped, master.scheduled) == (3, 7, 10)
    assert master.lateness_ms() == {"p50": 2, "p99": 250, "max": 250}
    assert worker_a.drain()["lateness"] == [] and worker_b.dropped == 0


def test_a_late_start_is_added_to_every_request_of_the_run():
    fired = []
    event = LateRequestEvent(SimpleNamespace(fire=lambda **kwargs: fired.append(kwargs)))
    event.late_s = 0.25
    event.fire(request_type="GET", name="Get_All_Products", response_time=12.0, start_time=100.0,
               response_length=10, exception=None, context={})
    event.fire(request_type="GET", name="Get_All_Products", response_time=None, start_time=None,
               response_length=0, exception=None, context={})
    assert fired[0]["response_time"] == pytest.approx(262.0) and fired[0]["start_time"] == pytest.approx(99.75)
    assert fired[1]["response_time"] is None


# --- end to end -----------------------------------------------------------------------------------

PROBE = '''
import json, os
from locust import events

SENT = []

@events.request.add_listener
def _record(start_time, response_time, **_kwargs):
    SENT.append((start_time, response_time))

@events.quitting.add_listener
def _dump(environment, **_kwargs):
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump(SENT, out)
'''

QUIET = ("thresholds: {error_rate: null, p95_ms: null, p99_ms: null, consistency: false}\n"
         "oracle: {enabled: false}\n")


def suite_command(tmp_path, url: str, seconds: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", f"locustfile.py,{tmp_path / 'probe.py'}", "--headless",
            "-t", f"{seconds}s", "--host", url, "--tags", "health", "--csv", str(tmp_path / "stats"),
            "--results-dir", str(tmp_path), "--only-summary", *extra]


@pytest.mark.e2e
def test_requests_keep_being_sent_while_the_service_is_frozen(tmp_path, product_service):
    """100 task runs/s; the reference service is frozen (SIGSTOP) for 1.5 s in the middle."""
    (tmp_path / "config.yaml").write_text("load_shape: {target_rps: 100}\n" + QUIET)
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "CONFIG_PATH": str(tmp_path / "config.yaml"), "PYTHONPATH": str(ROOT),
           "PROBE_OUT": str(tmp_path / "sent.json")}
    locust = subprocess.Popen(suite_command(tmp_path, product_service.url, 8, "-u", "2", "-r", "2"), cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4.0)  # startup and a few seconds on schedule
        frozen_at = time.time()
        os.kill(product_service.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)
        finally:
            thawed_at = time.time()
            os.kill(product_service.proc.pid, signal.SIGCONT)
        output, _ = locust.communicate(timeout=60)
    finally:
        if locust.poll() is None:
            locust.kill()
            locust.wait(timeout=10)
    summary = json.loads((tmp_path / "summary.json").read_text())
    sent = json.loads((tmp_path / "sent.json").read_text())
    during = [(start, rt) for start, rt in sent if frozen_at + 0.1 <= start <= thawed_at - 0.2]
    assert len(during) >= 0.8 * 100 * (thawed_at - frozen_at - 0.3), (len(during), output[-1500:])
    assert all(start + rt / 1000 >= thawed_at - 0.05 for start, rt in during)  # answered only after SIGCONT
    open_model = summary["open_model"]
    assert open_model["dropped"] == 0 and open_model["started"] >= 0.99 * open_model["scheduled"] >= 700, open_model
    assert summary["totals"]["failures"] == 0, summary["totals"]
    health = next(row for row in summary["endpoints"] if row["name"] == "Health_Check")
    assert health["p99_ms"] >= 700, health  # Locust's own statistics show the stall, no correction needed
    assert "Open model (arrival rate)" in output and "dropped 0" in output


@pytest.mark.e2e
def test_workers_share_the_staged_rate_and_the_master_reports_the_sum(tmp_path, product_service):
    (tmp_path / "config.yaml").write_text(
        "load_shape:\n  name: staged\n  staged:\n    stages:\n"
        "      - {duration: 4, users: 2, spawn_rate: 20, target_rps: 20}\n"
        "      - {duration: 4, users: 2, spawn_rate: 20, target_rps: 60}\n" + QUIET)
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "CONFIG_PATH": str(tmp_path / "config.yaml"), "PYTHONPATH": str(ROOT),
           "PROBE_OUT": str(tmp_path / "sent.json")}
    done = subprocess.run(suite_command(tmp_path, product_service.url, 60, "--processes", "2"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)
    summary = json.loads((tmp_path / "summary.json").read_text())
    open_model = summary["open_model"]
    assert 30 <= open_model["target_rps"] <= 50, open_model  # time-weighted 20 and 60 over 4 s each: 40
    assert 0.8 * open_model["target_rps"] <= open_model["achieved_rps"] <= 1.2 * open_model["target_rps"], open_model
    assert summary["totals"]["failures"] == 0, summary["totals"]  # workers' own users aim at the master's host
    in_flight_at_stop = open_model["started"] - summary["totals"]["requests"]  # cut off mid-request by the stop
    assert open_model["dropped"] == 0 and 0 <= in_flight_at_stop <= 4, (open_model, summary["totals"], done.stdout[-1500:])
