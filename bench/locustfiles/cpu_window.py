"""Bench plugin (`locust -f yours.py,bench/locustfiles/cpu_window.py`): CPU and requests of the steady state.

Marks the generator's CPU time (psutil, this process and its children: user + system), the wall
clock and Locust's request count when spawning completes and when the test starts stopping, and
writes both marks to BENCH_WINDOW_OUT as JSON on quit. Startup, ramp-up and the end-of-run work
(reports, the oracle's check) fall outside the window. Listens to three events, never per request.
"""
import json
import os
import time

import psutil
from locust import events

_marks = {}
_process = psutil.Process()


def _mark(environment):
    cpu = 0.0
    for process in (_process, *_process.children(recursive=True)):
        times = process.cpu_times()
        cpu += times.user + times.system
    return {"cpu_s": cpu, "wall_s": time.perf_counter(), "requests": environment.stats.total.num_requests,
            "failures": environment.stats.total.num_failures}


@events.init.add_listener
def _on_init(environment, **_kwargs):
    _marks["environment"] = environment


@events.spawning_complete.add_listener
def _on_spawned(user_count, **_kwargs):
    _marks.setdefault("start", _mark(_marks["environment"]))


@events.test_stopping.add_listener
def _on_stopping(environment, **_kwargs):
    _marks.setdefault("stop", _mark(environment))


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs):
    out = os.environ.get("BENCH_WINDOW_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as file:
            json.dump({key: _marks.get(key) for key in ("start", "stop")}, file)
