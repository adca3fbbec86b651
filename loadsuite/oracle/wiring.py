"""The oracle wired into Locust: start and end snapshots, records from workers, finalize().

Contract for the locustfile:
- Tasks record into the process ledger `recorder()` AFTER each buy / stock update, also when the request
  was cut short: a user killed at the end of a run (stop_timeout reached, Ctrl-C) dies inside the request,
  so record in a `finally` (or use `recorder().buying(...)`), with outcome "failed" when no answer was read.
  Outcomes: buys "ok" | "insufficient" | "not_found" | "failed" (timeout, connection error, 5xx: may or may
  not have been applied); stock updates "ok" | "rejected" (any 4xx: certainly not applied) | "failed".
- Call `install(environment, config.oracle)` once per process from an `init` listener (runner exists).
- On the master or local runner, `finalize(environment)` returns the `OracleResult`; call it from the
  verdict's `quitting` listener. It is idempotent and blocking (bounded by final_reports.GRACE_S +
  stop_timeout + HTTP timeouts): it stops local users or asks workers for their records if that has not
  happened yet, fetches the final stock and runs `check`. `result(environment)` returns it without work.

How the records of workers reach the master (Locust 2.47, locust/runners.py and main.py):
- test_start fires on the master (MasterRunner.start) before any spawn message goes out, on a local
  runner before users spawn, on a worker when its first spawn message arrives.
- A worker sends its records from its test_stop listener (its users are stopped). The run's final-report
  protocol (loadsuite/distributed/final_reports.py, attached after these listeners) then sends its last
  statistics and a marker; messages from one worker arrive in order, so a worker's marker means its records
  are in. The master's finalize() calls final_reports.collect(), which stops the workers that have not sent
  their marker and waits for them, bounded; the workers that never answered are named as missing.
- Headless --run-time and a shape's end fire test_stop on the master while workers still run; Ctrl-C/SIGTERM
  fires quitting (listeners in reverse registration order) before that; both call finalize() first. When
  the last worker quits by itself, test_stop runs inside the master's message loop: then the work moves to
  a separate greenlet so that loop keeps receiving records.
- Event listeners must not raise: Locust turns any exception in a listener into exit code 2.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from ..distributed import final_reports
from ..transport.service_client import snapshot_stock
from .checks import OracleResult, check
from .ledger import recorder, split_payload

logger = logging.getLogger("inventory_oracle")

MESSAGE_RECORDS = "oracle_records"
_LEDGER = recorder()

# Locust wiring ------------------------------------------------------------------------------------

class _RunState:
    """What the oracle knows about the current test run in this process."""

    def __init__(self, config, base_url_provider, http_timeout_s: float) -> None:
        self.config = config
        self.base_url_provider = base_url_provider
        self.http_timeout_s = http_timeout_s
        self.reset()

    def reset(self) -> None:
        self.started = False
        self.start_stock: dict[str, int] | None = None
        self.start_error: str | None = None
        self.expected_workers: set[str] = set()
        self.reported_workers: set[str] = set()
        self.late_records = 0
        self.sent_records = 0  # worker: records shipped to the master this run
        self.seen_chunks: set[tuple] = set()  # master: (worker, batch, part) absorbed, so a resent chunk counts once
        self.duplicate_chunks = 0
        self.records_by_source: dict[str, int] = {}
        self.result: OracleResult | None = None
        self.busy_in = None  # the greenlet computing the result
        self.done = None  # gevent Event, set when the result is ready


def _role(runner) -> str:
    from locust.runners import LocalRunner, MasterRunner, WorkerRunner
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    if isinstance(runner, LocalRunner):
        return "local"
    return "none"


def _state(environment) -> _RunState | None:
    return getattr(environment, "inventory_oracle_state", None)


def install(environment, config, base_url_provider: Callable[[], str | None] | None = None,
            http_timeout_s: float = 5.0) -> None:
    """Set up the oracle on this Locust environment (once per process, from init: the runner exists);
    its listeners() are attached by event_hooks.register.

    config is config_loader.OracleConfig (enabled, max_records, clock_skew_ms). base_url_provider gives the
    service URL for the snapshots; default: environment.host, else the first user class's host.
    """
    if _state(environment) is not None:
        return
    state = _RunState(config, base_url_provider, http_timeout_s)
    environment.inventory_oracle_state = state
    environment.oracle_result = None
    _LEDGER.configure(max_records=config.max_records)
    if not config.enabled:
        return
    if environment.runner is not None:
        _attach(environment)


def listeners(environment) -> list[tuple[str, Callable]]:
    """(event name, listener) pairs for event_hooks.register; none when the oracle is off."""
    state = _state(environment)
    if state is None or not state.config.enabled:
        return []
    pairs = [(name, lambda environment, _fn=function, **_kw: _guard(_fn, environment))
             for name, function in (("test_start", _on_test_start), ("test_stop", _on_test_stop),
                                    ("quitting", _on_quitting))]
    if _role(environment.runner) == "master":
        pairs.append(("worker_report", lambda client_id, data, **_kw: _saw_worker(environment, client_id)))
    return pairs + final_reports.listeners(environment)  # after the records: a worker's marker says they are in


def finalize(environment, timeout_s: float | None = None) -> OracleResult | None:
    """The run's OracleResult on the master or local runner, computed once (stop users, collect, fetch, check).

    Returns None when the oracle is not installed or disabled, or (only) when called re-entrantly while
    this same greenlet is computing it.
    """
    state = _state(environment)
    if state is None or not state.config.enabled:
        return None
    if state.result is not None:
        return state.result
    import gevent
    from gevent.event import Event
    current = gevent.getcurrent()
    if state.busy_in is not None:
        if state.busy_in is current:
            return None
        state.done.wait(timeout=timeout_s)
        return state.result
    state.busy_in, state.done = current, Event()
    try:
        result = _compute(environment, state)
    except Exception as error:  # never take the run down: report the oracle itself as undecided
        logger.exception("inventory oracle failed")
        result = OracleResult.undecided(f"the oracle failed: {error.__class__.__name__}: {error}")
    state.result = result
    environment.oracle_result = result
    state.busy_in = None
    state.done.set()
    logger.info("%s", result.summary_line())
    return result


def result(environment) -> OracleResult | None:
    """The result finalize() computed for the current run, or None if not (yet) computed."""
    state = _state(environment)
    return state.result if state is not None else None


def _guard(function, environment) -> None:
    """Run a listener; an exception escaping a Locust listener would set exit code 2."""
    try:
        function(environment)
    except Exception:
        logger.exception("inventory oracle: %s failed", function.__name__)


def _attach(environment) -> None:
    runner = environment.runner
    role = _role(runner)
    if role == "worker":
        _LEDGER.configure(source=runner.client_id)
    elif role == "master":
        _LEDGER.configure(source="master")
        runner.register_message(MESSAGE_RECORDS, _on_records)
    else:
        _LEDGER.configure(source="local")


def _base_url(environment, state: _RunState) -> str | None:
    if state.base_url_provider is not None:
        return state.base_url_provider()
    if environment.host:
        return environment.host
    return next((c.host for c in environment.user_classes if getattr(c, "host", None)), None)


def reset(environment) -> None:
    """A new test: no records, no snapshot, no result (SuiteRun resets every part when a test starts)."""
    state = _state(environment)
    if state is not None:
        state.reset()
        _LEDGER.clear()


def _on_test_start(environment) -> None:
    state = _state(environment)
    state.started = True
    role = _role(environment.runner)
    if role == "worker":
        return
    if role == "master":
        state.expected_workers = set(environment.runner.clients)
    state.start_stock, state.start_error = snapshot_stock(_base_url(environment, state), state.http_timeout_s)
    if state.start_error:
        logger.warning("inventory oracle: start snapshot failed: %s", state.start_error)


def _on_test_stop(environment) -> None:
    role = _role(environment.runner)
    if role == "worker":
        _send_records(environment)
    elif role in ("master", "local"):
        if final_reports.in_message_loop():
            import gevent
            gevent.spawn(finalize, environment)  # the loop must keep receiving worker records
        else:
            finalize(environment)


def _on_quitting(environment) -> None:
    """Master or local: Ctrl-C ends the run here before test_stop fires (a worker's users are stopped, and its
    records sent, by final_reports' quitting listener)."""
    if _role(environment.runner) in ("master", "local") and _state(environment).started:
        finalize(environment)


def _send_records(environment) -> None:
    """Worker: ship every record to the master, the last chunk marked final; each chunk has an identity
    (batch, part) so that the master counts a chunk it receives twice once."""
    import uuid
    chunks = split_payload(_LEDGER.drain())
    batch = uuid.uuid4().hex
    for number, chunk in enumerate(chunks):
        chunk["final"] = number == len(chunks) - 1
        chunk["batch"], chunk["part"] = batch, number
        environment.runner.send_message(MESSAGE_RECORDS, chunk)
    state = _state(environment)
    state.sent_records += sum(len(chunk.get("buys", ())) + len(chunk.get("stock_sets", ())) for chunk in chunks)
    logger.info("inventory oracle: sent %d records to the master as %s", state.sent_records,
                environment.runner.client_id)


def receipt(environment) -> dict:
    """Master: records absorbed per worker, and chunks received more than once (each counted once)."""
    state = _state(environment)
    if state is None:
        return {"records_by_source": {}, "duplicate_chunks": 0}
    return {"records_by_source": dict(state.records_by_source), "duplicate_chunks": state.duplicate_chunks}


def _on_records(environment, msg, **_kw) -> None:
    """Master: absorb one chunk of a worker's records."""
    state = _state(environment)
    data = msg.data or {}
    if state.result is not None:
        state.late_records += len(data.get("buys", ())) + len(data.get("stock_sets", ()))
        logger.warning("inventory oracle: records from %s arrived after the check", msg.node_id)
        return
    identity = (msg.node_id, data.get("batch"), data.get("part"))
    if data.get("batch") is not None and identity in state.seen_chunks:
        state.duplicate_chunks += 1
        logger.warning("inventory oracle: a chunk of records from %s arrived twice; counted once", msg.node_id)
        return
    state.seen_chunks.add(identity)
    _LEDGER.absorb(data, source=msg.node_id)
    state.records_by_source[msg.node_id] = (state.records_by_source.get(msg.node_id, 0)
                                            + len(data.get("buys", ())) + len(data.get("stock_sets", ())))
    state.expected_workers.add(msg.node_id)
    if data.get("final"):
        state.reported_workers.add(msg.node_id)


def _saw_worker(environment, client_id: str) -> None:
    state = _state(environment)
    if state is not None and state.started and state.result is None:
        state.expected_workers.add(client_id)


def _stop_local(environment) -> None:
    from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED
    runner = environment.runner
    if runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
        runner.stop()
    deadline = time.monotonic() + (environment.stop_timeout or 0) + 5
    while runner.state == STATE_CLEANUP and time.monotonic() < deadline:
        time.sleep(0.05)


def _collect_from_workers(environment, state: _RunState) -> list[str]:
    """Master: have every worker stop and report (records, then its final-report marker); the ones whose
    records never arrived. Workers Locust marked missing (no heartbeat) cannot answer: they are not waited for."""
    state.expected_workers |= set(environment.runner.clients)
    final_reports.collect(environment)
    return sorted(state.expected_workers - state.reported_workers)


def _compute(environment, state: _RunState) -> OracleResult:
    if not state.started:
        return OracleResult.undecided("no test ran")
    role = _role(environment.runner)
    missing: list[str] = []
    if role == "local":
        _stop_local(environment)
    elif role == "master":
        missing = [f"worker {w}" for w in _collect_from_workers(environment, state)]
    final_stock, final_error = snapshot_stock(_base_url(environment, state), state.http_timeout_s)
    buys, sets = _LEDGER.records()
    return check(state.start_stock, final_stock, buys, sets, state.config.clock_skew_ms / 1000.0,
                 _LEDGER.dropped_products, missing, state.start_error, final_error, _LEDGER.dropped_records)
