"""The oracle wired into Locust: start and end snapshots, the master/worker flush protocol, finalize().

Contract for the locustfile (the lead's code):
- Tasks record into the process ledger `recorder()` AFTER each buy / stock update, also when the request
  was cut short: a user killed at the end of a run (stop_timeout reached, Ctrl-C) dies inside the request,
  so record in a `finally` (or use `recorder().buying(...)`), with outcome "failed" when no answer was read.
  Outcomes: buys "ok" | "insufficient" | "not_found" | "failed" (timeout, connection error, 5xx: may or may
  not have been applied); stock updates "ok" | "rejected" (any 4xx: certainly not applied) | "failed".
- Call `install(environment, config.oracle)` once per process from an `init` listener (runner exists).
- On the master or local runner, `finalize(environment)` returns the `OracleResult`; call it from the
  verdict's `quitting` listener. It is idempotent and blocking (bounded by report_timeout_s +
  stop_timeout + HTTP timeouts): it stops local users or asks workers for their records if that has not
  happened yet, fetches the final stock and runs `check`. `result(environment)` returns it without work.

Locust 2.47 event order this relies on (locust/runners.py, locust/main.py):
- test_start fires on the master (MasterRunner.start) before any spawn message goes out, on a local
  runner before users spawn, on a worker when its first spawn message arrives.
- Headless --run-time, a shape's end and Ctrl-C/SIGTERM all end in MasterRunner.quit(), which calls
  stop(send_stop_to_client=False): test_stop fires on the master WHILE WORKERS ARE STILL RUNNING; quit
  then sends "quit", sleeps 0.5 s and kills the master's greenlets (its message listener included), so a
  worker that needs longer to stop would lose its records. Hence the master's test_stop listener (or the
  first finalize) sends "oracle_flush": each worker stops its users (test_stop fires there) and sends its
  records ("oracle_records", chunked) and the master waits, bounded, for every worker it saw.
- Web UI stop / a shape's end without --headless use stop(send_stop_to_client=True): workers stop, fire
  test_stop (records go out first) and only then send client_stopped, so the records are there when
  test_stop fires on the master (messages from one worker arrive in order over ZeroMQ).
- main.shutdown() fires quitting (listeners in reverse registration order) BEFORE runner.quit(): on
  Ctrl-C/SIGTERM the users still run when the verdict's quitting listener calls finalize(), which stops
  them first. When the last worker quits by itself, test_stop runs inside the master's message loop:
  then the work moves to a separate greenlet so that loop keeps receiving records.
- Event listeners must not raise: Locust turns any exception in a listener into exit code 2.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from ..service_client import snapshot_stock
from .checks import OracleResult, check
from .ledger import recorder, split_payload

logger = logging.getLogger("inventory_oracle")

MESSAGE_RECORDS = "oracle_records"
MESSAGE_FLUSH = "oracle_flush"
_LEDGER = recorder()

# Locust wiring ------------------------------------------------------------------------------------

class _RunState:
    """What the oracle knows about the current test run in this process."""

    def __init__(self, config, base_url_provider, report_timeout_s: float, http_timeout_s: float) -> None:
        self.config = config
        self.base_url_provider = base_url_provider
        self.report_timeout_s = report_timeout_s
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
            report_timeout_s: float = 10.0, http_timeout_s: float = 5.0) -> None:
    """Set up the oracle on this Locust environment (once per process, from init: the runner exists);
    its listeners() are attached by event_hooks.register.

    config is config_loader.OracleConfig (enabled, max_records, clock_skew_ms). base_url_provider gives the
    service URL for the snapshots; default: environment.host, else the first user class's host.
    """
    if _state(environment) is not None:
        return
    state = _RunState(config, base_url_provider, report_timeout_s, http_timeout_s)
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
    return pairs


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
        runner.register_message(MESSAGE_FLUSH, _on_flush_request, concurrent=True)
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


def _on_test_start(environment) -> None:
    state = _state(environment)
    state.reset()
    _LEDGER.clear()
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
        if _in_message_loop():
            import gevent
            gevent.spawn(finalize, environment)  # the loop must keep receiving worker records
        else:
            finalize(environment)


def _on_quitting(environment) -> None:
    runner = environment.runner
    role = _role(runner)
    if role == "worker":
        from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED
        if runner.state not in (STATE_INIT, STATE_STOPPED, STATE_CLEANUP):
            runner.stop()  # test_stop sends the records before WorkerRunner tells the master it quits
    elif role in ("master", "local") and _state(environment).started:
        finalize(environment)


def _in_message_loop() -> bool:
    """True inside MasterRunner.client_listener (the last worker quit): blocking there would starve it."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "client_listener" and "locust" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


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


def _on_flush_request(environment, msg, **_kw) -> None:
    """Worker, asked by the master at the end: stop the users (test_stop sends the records) or resend the final mark."""
    from locust.runners import STATE_CLEANUP, STATE_INIT, STATE_STOPPED, STATE_STOPPING
    try:
        runner = environment.runner
        deadline = time.monotonic() + (environment.stop_timeout or 0) + 5
        while runner.state in (STATE_CLEANUP, STATE_STOPPING) and time.monotonic() < deadline:
            time.sleep(0.05)  # another greenlet is stopping the users; its test_stop sends the records
        if runner.state not in (STATE_INIT, STATE_STOPPED):
            runner.stop()
            if runner.state == STATE_STOPPED:
                return
        _send_records(environment)
    except Exception:
        logger.exception("inventory oracle: flush failed")


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
    """Master: ask every worker that has not reported yet, wait (bounded); the ones that never answer.

    Workers Locust marked missing (no heartbeat) or already removed cannot answer: they are not waited for.
    """
    from locust.runners import STATE_MISSING
    runner = environment.runner
    state.expected_workers |= set(runner.clients)
    connected = {client.id for client in runner.clients.all if client.state != STATE_MISSING}
    if connected - state.reported_workers:
        runner.send_message(MESSAGE_FLUSH, None)
    deadline = time.monotonic() + state.report_timeout_s + (environment.stop_timeout or 0)
    while connected - state.reported_workers and time.monotonic() < deadline:
        time.sleep(0.05)
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
