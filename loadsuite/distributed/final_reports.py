"""Every worker's last statistics reach the master before the master reads them (summary, thresholds, oracle).

Locust 2.47 workers send their statistics every 3 s (WORKER_REPORT_INTERVAL) and a last report only when the
master sends `quit` (locust/runners.py). The master stops (test_stop) at -t, a shape's end or a signal, then
sends `quit`, waits 0.5 s and kills its message loop: a worker that needs longer to stop (users finishing slow
requests within --stop-timeout, a loaded machine) has its last seconds of requests, open-model counts and
custom statistics left out of the summary and the thresholds.

The protocol (messages from one worker reach the master in order over ZeroMQ):
- Worker, test_stop (its users are stopped; the oracle's test_stop listener, attached before this one, has sent
  its records): a statistics report now, then the marker MESSAGE_FINAL. Also on quitting: the worker stops its
  users first, so the report and the marker go out before Locust's own `quit` message.
- Worker, asked with MESSAGE_REQUEST: stop the users (test_stop sends the report and the marker), or, already
  stopped, send them again (the master counts a worker once).
- Master: `collect(environment)` asks every connected worker that has not sent its marker this run and waits,
  bounded by stop_timeout + GRACE_S, for the markers. Workers Locust marked missing (no heartbeat) are not waited
  for. It is called from the master's test_stop (before the oracle and the reports), from the oracle's
  finalize() (its quitting listener runs before the master stops) and from the end of the run. Idempotent per
  run; returns the workers that never answered. Inside the master's message loop (the last worker quit by
  itself) it does not wait: that loop delivers the markers.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

import gevent
from locust.runners import (STATE_CLEANUP, STATE_INIT, STATE_MISSING, STATE_STOPPED, STATE_STOPPING, MasterRunner,
                            WorkerRunner)

logger = logging.getLogger("product_service_suite")

MESSAGE_REQUEST = "suite_final_report_request"
MESSAGE_FINAL = "suite_final_report"
GRACE_S = 10.0  # beyond stop_timeout: a worker's stop, its last report and its oracle records on a loaded machine


class _MasterState:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.final: set[str] = set()  # workers whose marker arrived this run
        self.unanswered: list[str] | None = None  # set once collect() has waited


def listeners(environment) -> list[tuple[str, Callable]]:
    """(event, listener) pairs to attach AFTER the oracle's (its records go first); the oracle's listeners()
    include them. Once per environment: a second call returns none."""
    if getattr(environment, "final_reports_attached", False):
        return []
    environment.final_reports_attached = True
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(MESSAGE_REQUEST, _on_request, concurrent=True)
        return [("test_stop", lambda environment, **_kw: _send_final(environment)),
                ("quitting", lambda environment, **_kw: _stop_worker(environment))]
    if isinstance(runner, MasterRunner):
        state = _MasterState()
        environment.final_reports_state = state
        runner.register_message(MESSAGE_FINAL, lambda environment, msg, **_kw: state.final.add(msg.node_id))
    return []


def reset(environment) -> None:
    """Master: a new test, no worker has sent its last report yet (SuiteRun resets every part at test start)."""
    state: _MasterState | None = getattr(environment, "final_reports_state", None)
    if state is not None:
        state.reset()


def collect(environment) -> list[str]:
    """Master: wait (bounded) until every connected worker has sent its last report; the ones that did not."""
    state: _MasterState | None = getattr(environment, "final_reports_state", None)
    runner = environment.runner
    if state is None or not isinstance(runner, MasterRunner):
        return []
    if state.unanswered is not None:
        return state.unanswered
    waiting = _connected(runner) - state.final
    if waiting and in_message_loop():
        return sorted(waiting)  # cannot wait here; a later call (quitting) still can
    for worker in sorted(waiting):
        runner.send_message(MESSAGE_REQUEST, None, client_id=worker)
    deadline = time.monotonic() + (environment.stop_timeout or 0) + GRACE_S
    while waiting and time.monotonic() < deadline:
        gevent.sleep(0.05)
        waiting = (waiting & _connected(runner)) - state.final  # a worker marked missing meanwhile: not awaited
    state.unanswered = sorted(waiting)
    if waiting:
        logger.warning("no last report from worker(s) %s within %.0f s: their last seconds are not counted",
                       ", ".join(state.unanswered), (environment.stop_timeout or 0) + GRACE_S)
    return state.unanswered


def in_message_loop() -> bool:
    """True inside MasterRunner.client_listener (the last worker quit): blocking there would starve it."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "client_listener" and "locust" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _connected(runner) -> set[str]:
    return {client.id for client in runner.clients.all if client.state != STATE_MISSING}


def _send_final(environment) -> None:
    """Worker: the statistics gathered since the last report, then the marker (a listener must never raise)."""
    runner = environment.runner
    try:
        runner._send_stats()  # Locust's own report (report_to_master fires: stats, custom stats, open-model counts)
        runner.send_message(MESSAGE_FINAL, None)
    except Exception:
        logger.exception("could not send the last report to the master")


def _stop_worker(environment) -> None:
    runner = environment.runner
    if runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
        runner.stop()  # test_stop sends the last report before WorkerRunner tells the master it quits


def _on_request(environment, msg, **_kw) -> None:
    """Worker, asked by the master: stop the users (test_stop reports), or report again if already stopped."""
    runner = environment.runner
    deadline = time.monotonic() + (environment.stop_timeout or 0) + GRACE_S
    while runner.state in (STATE_CLEANUP, STATE_STOPPING) and time.monotonic() < deadline:
        gevent.sleep(0.05)  # another greenlet is stopping the users; its test_stop reports
    if runner.state in (STATE_INIT, STATE_STOPPED):
        _send_final(environment)
    else:
        runner.stop()
