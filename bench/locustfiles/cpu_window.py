"""Bench plugin (`locust -f yours.py,bench/locustfiles/cpu_window.py`): CPU and requests of the steady state.

Marks the generator's CPU time (psutil, this process and its children: user + system), the wall
clock, the event loop's passes (libev's iteration count), this process's voluntary context switches
(how often it blocked and woke) and Locust's request count when spawning completes and when the test
starts stopping, and writes both marks to BENCH_WINDOW_OUT as JSON on quit. Startup, ramp-up and the
end-of-run work (reports, the oracle's check) fall outside the window. Listens to three events, never
per request. With BENCH_COUNT_CALLS=1 (or BENCH_PROFILE_OUT=FILE, which also
writes the cProfile stats there) it also counts the Python and C function calls made in the window
(cProfile: exact counts, but it slows every call, so such a run's CPU figures mean nothing); with
BENCH_IDLE_GAPS=1 it counts, per event-loop pass, how long the loop blocked before it (libev prepare and
check watchers: a few microseconds of Python per pass, in both models alike).
"""
import cProfile
import json
import os
import time

import gevent
import psutil
from locust import events

_marks = {}
_process = psutil.Process()
GAP_EDGES_MS = (0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)  # idle-gap histogram: below each edge, and above the last
_gaps = [0] * (len(GAP_EDGES_MS) + 1)
_blocked_at = [0.0]


class _IdleGaps:
    """libev prepare (about to block) and check (woke) watchers: the histogram of how long each block lasted."""

    def __init__(self):
        loop = gevent.get_hub().loop
        self.prepare, self.check = loop.prepare(ref=False), loop.check(ref=False)
        self.prepare.start(self._before)
        self.check.start(self._after)

    @staticmethod
    def _before():
        _blocked_at[0] = time.perf_counter()

    @staticmethod
    def _after():
        gap_ms = (time.perf_counter() - _blocked_at[0]) * 1000.0
        index = 0
        for edge in GAP_EDGES_MS:
            if gap_ms < edge:
                break
            index += 1
        _gaps[index] += 1

    def stop(self):
        self.prepare.stop()
        self.check.stop()


def _mark(environment):
    cpu = 0.0
    for process in (_process, *_process.children(recursive=True)):
        times = process.cpu_times()
        cpu += times.user + times.system
    return {"cpu_s": cpu, "wall_s": time.perf_counter(), "loop_passes": getattr(gevent.get_hub().loop, "iteration", 0),
            "wakeups": _process.num_ctx_switches().voluntary, "requests": environment.stats.total.num_requests,
            "failures": environment.stats.total.num_failures}


@events.init.add_listener
def _on_init(environment, **_kwargs):
    _marks["environment"] = environment


@events.spawning_complete.add_listener
def _on_spawned(user_count, **_kwargs):
    if "start" in _marks:
        return
    _marks["start"] = _mark(_marks["environment"])
    if os.environ.get("BENCH_IDLE_GAPS") == "1":
        _marks["gaps"] = _IdleGaps()
    if os.environ.get("BENCH_COUNT_CALLS") == "1" or os.environ.get("BENCH_PROFILE_OUT"):
        _marks["profile"] = cProfile.Profile()
        _marks["profile"].enable()  # this thread, so every greenlet of the event loop


@events.test_stopping.add_listener
def _on_stopping(environment, **_kwargs):
    if "stop" in _marks:
        return
    gaps = _marks.pop("gaps", None)
    if gaps is not None:
        gaps.stop()
        _marks["idle_gaps"] = {"edges_ms": GAP_EDGES_MS, "counts": list(_gaps)}
    profile = _marks.pop("profile", None)
    if profile is not None:
        profile.disable()
    _marks["stop"] = _mark(environment)
    if profile is not None and os.environ.get("BENCH_PROFILE_OUT"):
        profile.dump_stats(os.environ["BENCH_PROFILE_OUT"])  # bench/profile_layers.py groups it by layer
    if profile is not None:
        _marks["stop"]["calls"] = sum(entry.callcount for entry in profile.getstats())
        _marks["start"]["calls"] = 0


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs):
    out = os.environ.get("BENCH_WINDOW_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as file:
            json.dump({key: _marks.get(key) for key in ("start", "stop", "idle_gaps")}, file)
