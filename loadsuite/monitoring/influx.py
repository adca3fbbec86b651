"""Stream live run metrics to InfluxDB (v2 write API) without ever slowing or changing the load test.

Importing this module registers nothing; `install()` makes a Monitor and event_hooks attaches its listeners().

Design (why it cannot get in the users' way):
- Locust monkey-patches sockets with gevent, so a write (one POST to /api/v2/write with urllib3, which
  Locust already loads), called from a background greenlet, only ever blocks that greenlet. Each write
  is bounded twice: urllib3's timeout and a gevent.Timeout of write_timeout_seconds; never retried.
  influxdb-client is not imported in the load generator: see _ensure_client for the measured cost.
- Points wait in one bounded deque (max_buffer_points). When the server is down or slow, the oldest
  points are dropped and counted, and one warning is logged for the whole run.
- aggregate mode: a sampler greenlet on the master or local runner turns the deltas of Locust's own
  stats entries into one point per request name per interval; workers open no connection.
- raw mode: the `request` listener appends one tuple to the deque (no formatting, no I/O); the writer
  formats it later. Runs on workers too (each opens its own connection); the master or local runner
  still writes the aggregate points as well.

Measurements (prefix from config; docs/monitoring.md lists them with their VictoriaMetrics names):
- <prefix>_requests (tags name, method; fields count, failures, rps, avg, p50, p95, p99 of the interval,
  timestamped at its end). The percentiles are per interval and cannot be combined: use _latency.
- <prefix>_latency (tags name, method, le; field bucket): the interval's latency histogram, one point
  per fixed boundary of LATENCY_BUCKETS_MS plus le=+Inf, each the cumulative count of the interval's
  requests at or under le ms, built from the deltas of Locust's own response_times dict at sample
  time (never per request). Sums over any time range and any set of generators stay a histogram, so
  any percentile can be computed downstream (histogram_quantile, or Flux's histogramQuantile).
- <prefix>_failures (tags name, method, reason; field count): the deltas of Locust's own error table.
- <prefix>_responses (tags name, method, status; field count): only with status_codes: true, the one
  setting that adds a listener per request in aggregate mode (a dictionary increment).
- <prefix>_users (tag user_class; field users): running users per user class at the sample.
- <prefix>_run (users, count, failures, rps, failure_ratio), <prefix>_custom (numeric fields of
  custom_stats(), nested keys joined with "_"), <prefix>_events (tags event=start|end and message, the
  marker's text as a tag because VictoriaMetrics drops string fields; fields value=1, text),
  <prefix>_raw (response_time, response_length, failed). Every point carries run_id, host, test_name.

"""
from __future__ import annotations

import logging
import time
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Callable, Optional

import gevent
from locust.runners import WorkerRunner

if TYPE_CHECKING:
    from ..config import InfluxConfig

from .lines import _escape_key, _escape_string, _field
from .sampling import LATENCY_BUCKETS_MS, MAX_REASON_LENGTH, MAX_REASONS, IntervalSampler  # noqa: F401 - re-exported

log = logging.getLogger("monitoring")
ANSWER_BYTES = 4096  # of a write's answer, the most that is read (an error's text is shown up to 1,000 characters)


class _WriteTimedOut(Exception):
    """A write took longer than write_timeout_seconds (raised by our own gevent.Timeout)."""


class WriteRejected(Exception):
    """The store answered a write with an HTTP error (status, reason and the start of its body)."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status, self.reason, self.body = status, reason, body


class Monitor(IntervalSampler):
    """The metrics stream of one load-generator process: buffer, sampler and writer."""

    def __init__(self, environment, config: "InfluxConfig", token: Optional[str], run_id: str,
                 custom_stats: Optional[Callable[[], dict]] = None) -> None:
        self.environment = environment
        self.config = config
        self.run_id = run_id
        self._token = token or None
        self._custom_stats = custom_stats
        self._raw = config.mode == "raw"
        self._cap = config.max_buffer_points
        self._batch = min(config.batch_size, config.max_buffer_points)
        self._buffer: deque = deque(maxlen=self._cap)  # str lines, or raw request tuples
        self._written = 0
        self._dropped = 0
        self._errors = 0
        self._drops_seen = 0
        self.max_buffered = 0
        self._warned = False
        self._custom_warned = False
        self._failing = False
        self._retry_at = 0.0
        self._http = None  # urllib3.PoolManager, made by _ensure_client
        self._write_url = ""
        self._headers: dict[str, str] = {}
        self._sampler: Optional[gevent.Greenlet] = None
        self._writer: Optional[gevent.Greenlet] = None
        self._prev: dict[tuple[str, str], tuple] = {}
        self._prev_errors: dict[str, int] = {}
        self._reasons: dict[str, str] = {}  # Locust's error text -> escaped reason tag
        self._statuses: dict[tuple, int] = {}  # (name, method, status) -> count (status_codes only)
        self._prev_statuses: dict[tuple, int] = {}
        self._count_statuses = config.status_codes and not self._raw
        self._last_sample = time.monotonic()
        self._aggregating = False
        self._running = False
        self._wake_now = False
        self._sending = False  # the writer is waiting for a write's answer
        self._tag_cache: dict[tuple[str, str], str] = {}
        prefix = config.measurement_prefix
        self._m_requests = f"{prefix}_requests"
        self._m_run = f"{prefix}_run"
        self._m_custom = f"{prefix}_custom"
        self._m_events = f"{prefix}_events"
        self._m_raw = f"{prefix}_raw"
        self._m_latency = f"{prefix}_latency"
        self._m_failures = f"{prefix}_failures"
        self._m_responses = f"{prefix}_responses"
        self._m_users = f"{prefix}_users"
        host = environment.host or "unknown"
        self._base_tags = (f",run_id={_escape_key(run_id)},host={_escape_key(host)}"
                           f",test_name={_escape_key(config.test_name)}")

    # ----- public surface -------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Points written and dropped and failed write attempts so far (for the run summary)."""
        return {"points_written": self._written, "points_dropped": self._dropped, "write_errors": self._errors}

    @property
    def buffered(self) -> int:
        """Points waiting to be written right now (never more than max_buffer_points)."""
        return len(self._buffer)

    def listeners(self) -> list[tuple[str, Callable]]:
        """(event name, listener) pairs; event_hooks.register attaches them."""
        pairs = [("test_start", self._on_test_start), ("test_stop", self._on_test_stop),
                 ("quitting", self._on_quitting)]
        if self._raw:
            pairs.append(("request", self._on_request))
        elif self._count_statuses:
            pairs.append(("request", self._on_response_status))
        return pairs

    def flush(self, timeout: Optional[float] = None) -> None:
        """Write what is buffered, giving up after `timeout` seconds; what is left is counted as dropped."""
        timeout = self.config.write_timeout_seconds if timeout is None else timeout
        if self._writer is not None:
            # A write already sent is let finish (it is bounded by its own timeout): killed while it waits for the
            # answer, its points would stay buffered and be sent again below, stored twice on the server.
            settle = time.monotonic() + self.config.write_timeout_seconds + 0.5
            while self._sending and time.monotonic() < settle:
                gevent.sleep(0.01)
            self._writer.kill(block=True, timeout=1.0)
            self._writer = None
        self._failing = False  # one last attempt even if the server was failing
        self._drain(time.monotonic() + timeout, final=True)
        left = len(self._buffer)
        if left:
            self._dropped += left
            self._buffer.clear()

    # ----- event listeners ------------------------------------------------------------------

    def _on_request(self, request_type, name, response_time, response_length, exception=None,
                    start_time=None, **_kwargs) -> None:
        # Hot path: one tuple into a bounded deque; the writer formats it later.
        buffer = self._buffer
        if len(buffer) == self._cap:
            self._dropped += 1
        buffer.append((start_time or time.time(), request_type, name, response_time, response_length,
                       exception is not None))

    def _on_response_status(self, request_type, name, response=None, exception=None, **_kwargs) -> None:
        # Hot path (status_codes: true only): one dictionary increment, formatted at sample time.
        key = (name, request_type, getattr(response, "status_code", None) or 0)
        self._statuses[key] = self._statuses.get(key, 0) + 1

    def _on_test_start(self, environment=None, **_kwargs) -> None:
        if self._running:
            return
        self._running = True
        self._aggregating = not isinstance(self.environment.runner, WorkerRunner)
        if self._aggregating:
            # Deltas are counted from here, so a restarted run (web UI) starts from its own zero.
            self._prev = {key: self._snapshot(entry) for key, entry in self._entries()}
            self._prev_errors = self._error_counts()
            self._prev_statuses = dict(self._statuses)
            self._last_sample = time.monotonic()
            self._event("start", f"Load test {self.run_id} started ({self.config.test_name})")
            self._sampler = gevent.spawn(self._sample_loop)
        self._writer = gevent.spawn(self._write_loop)

    def _on_test_stop(self, environment=None, **_kwargs) -> None:
        if not self._running:
            return
        self._running = False
        if self._sampler is not None:
            self._sampler.kill(block=True, timeout=1.0)
            self._sampler = None
        if self._aggregating:
            self._sample()
            self._event("end", f"Load test {self.run_id} ended ({self.config.test_name})")
        self.flush()
        s = self.stats()
        log.info("monitoring: %d points written to %s, %d dropped, %d write errors",
                 s["points_written"], self.config.url, s["points_dropped"], s["write_errors"])

    def _on_quitting(self, environment=None, **_kwargs) -> None:
        if self._running:
            self._on_test_stop()
        elif self._aggregating and self._has_new_counts():
            # A master can receive the workers' last reports after test_stop: write them too.
            self._sample()
            self.flush()
            s = self.stats()
            log.info("monitoring: with the workers' last reports: %d points written, %d dropped, %d write errors",
                     s["points_written"], s["points_dropped"], s["write_errors"])
        if self._http is not None:
            try:
                self._http.clear()
            except Exception:  # noqa: BLE001 - closing must never fail a run
                pass
            self._http = None

    def _event(self, kind: str, text: str) -> None:
        # The text twice: as a tag (message) it survives in VictoriaMetrics, which drops string fields; the
        # string field (text) is kept for the InfluxDB queries written before the tag existed.
        self._push(f"{self._m_events}{self._base_tags},event={kind},message={_escape_key(text)} "
                   f'value=1i,text="{_escape_string(text)}" {time.time_ns()}')

    def _push(self, line: Optional[str]) -> None:
        if line is None:
            return
        if len(self._buffer) == self._cap:
            self._dropped += 1
        self._buffer.append(line)

    # ----- writing --------------------------------------------------------------------------

    def _writer_wake(self) -> None:
        self._wake_now = True

    def _write_loop(self) -> None:
        poll = min(self.config.flush_interval_seconds, 0.2 if self._raw else 0.5)
        last = time.monotonic()
        while True:
            gevent.sleep(poll)
            now = time.monotonic()
            if not (self._wake_now or len(self._buffer) >= self._batch
                    or now - last >= self.config.flush_interval_seconds):
                continue
            self._wake_now = False
            last = now
            try:
                self._drain(None)
            except Exception as error:  # noqa: BLE001 - monitoring must never end a run
                log.debug("monitoring: writer failed: %s", self._scrub(error))

    def _drain(self, deadline: Optional[float], final: bool = False) -> None:
        """Write batches until the buffer is empty, a write fails, or the deadline passes."""
        self.max_buffered = max(self.max_buffered, len(self._buffer))
        if self._dropped > self._drops_seen:
            self._drops_seen = self._dropped
            self._warn_once(None)
        if not final and self._failing and time.monotonic() < self._retry_at:
            return
        while self._buffer:
            timeout = self.config.write_timeout_seconds
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return
            count = min(self._batch, len(self._buffer))
            batch = list(islice(self._buffer, count))
            dropped_before = self._dropped
            self._sending = True
            try:
                error = self._send(self._format(batch), timeout)
            finally:
                self._sending = False
            if error is not None:
                self._errors += 1
                self._failing = True
                self._retry_at = time.monotonic() + self.config.flush_interval_seconds
                self._warn_once(error)
                return
            # Points of this batch dropped from the left while it was in flight were written after all.
            gone = min(count, self._dropped - dropped_before)
            self._dropped -= gone
            for _ in range(count - gone):
                self._buffer.popleft()
            self._written += count
            if self._failing:
                self._failing = False
                log.info("monitoring: writes to %s resumed", self.config.url)

    def _format(self, batch: list) -> bytes:
        lines = []
        seen: set = set()
        raw_m, base = self._m_raw, self._base_tags
        for item in batch:
            if isinstance(item, str):
                lines.append(item)
                continue
            start, method, name, response_time, length, failed = item
            tags = self._request_tags(name, method)
            ts = int(start * 1e9)
            while (tags, ts) in seen:  # one series cannot hold two points at the same instant
                ts += 1
            seen.add((tags, ts))
            rt = _field(float(response_time)) if response_time is not None else None
            rt_part = f"response_time={rt}," if rt is not None else ""
            lines.append(f"{raw_m}{base}{tags} {rt_part}response_length={int(length or 0)}i,"
                         f"failed={int(failed)}i {ts}")
        return "\n".join(lines).encode("utf-8")

    def _send(self, body: bytes, timeout: float) -> Optional[BaseException]:
        """One bounded POST to the v2 write API; returns the error instead of raising it."""
        try:
            http = self._ensure_client()
            with gevent.Timeout(timeout, _WriteTimedOut(f"no answer within {timeout:.1f} s")):
                response = http.request("POST", self._write_url, body=body, headers=self._headers,
                                        timeout=timeout, retries=False, redirect=False, preload_content=False)
                # At most ANSWER_BYTES of the answer are read: one that never ends would otherwise grow this
                # process without bound, and a socket that always has data never yields to gevent, so neither
                # this timeout nor the users would run while it was read.
                head = response.read(ANSWER_BYTES + 1, decode_content=False)
            if len(head) <= ANSWER_BYTES and (response.status == 204 or response.length_remaining == 0):
                response.release_conn()  # read to its end: the connection is kept for the next write
            else:
                response.close()  # the rest is never read; the next write opens a new connection
            if response.status >= 300:
                raise WriteRejected(response.status, response.reason or "",
                                    head[:1000].decode("utf-8", "replace"))
        except Exception as error:  # noqa: BLE001 - every failure becomes a counted, scrubbed error
            return error
        return None

    def _ensure_client(self):
        """The HTTP pool for writes (one keep-alive connection; opens nothing until the first write).

        influxdb-client's WriteApi SYNCHRONOUS is one POST to /api/v2/write, but importing that library
        (and NumPy, which it imports when installed) cost the generator 0.3 CPU-s at start and, measured
        side by side with bench/bench_monitoring.py, about 4 % of its requests per CPU-second for the whole
        run: aggregate mode was 0.952x of "off" with it, 0.993x with this. urllib3 is already loaded by
        Locust (requests), so the same POST is made with it here.
        """
        if self._http is None:
            import urllib3
            from urllib.parse import urlencode, urlsplit

            url = self.config.url.rstrip("/")
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError(f"monitoring url {self.config.url!r} is not an http(s) URL")
            query = urlencode({"org": self.config.org, "bucket": self.config.bucket, "precision": "ns"})
            self._write_url = f"{url}/api/v2/write?{query}"
            self._headers = {"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json"}
            if self._token:  # InfluxDB 2 token, or "username:password" for InfluxDB 1.8
                self._headers["Authorization"] = f"Token {self._token}"
            # retries=False: a failed write is ours to count and drop, never retried behind our back.
            self._http = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False)
        return self._http

    def _warn_once(self, error: Optional[BaseException]) -> None:
        if self._warned:
            if error is not None:
                log.debug("monitoring: write failed again: %s", self._scrub(error))
            return
        self._warned = True
        reason = f"cannot write to {self.config.url} ({self._scrub(error)})" if error is not None \
            else f"{self.config.url} does not keep up"
        log.warning("monitoring: %s; the load test is not affected, the oldest points beyond %d are "
                    "dropped and counted (shown once)", reason, self._cap)

    def _scrub(self, error: Optional[BaseException]) -> str:
        """One line describing the error, with the token (if any) masked."""
        if error is None:
            return ""
        status = getattr(error, "status", None)
        if isinstance(status, int):  # WriteRejected: status, reason and body, no headers
            text = f"HTTP {status} {getattr(error, 'reason', '')}: {getattr(error, 'body', '') or ''}"
        else:
            text = f"{type(error).__name__}: {error}"
        if self._token:  # before shortening, so no fragment of the token survives the cut
            text = text.replace(self._token, "***")
        return " ".join(text.split())[:300]


def install(environment, config: "InfluxConfig", token: Optional[str], run_id: str,
            custom_stats: Optional[Callable[[], dict]] = None) -> Optional[Monitor]:
    """Attach live monitoring to this process's Environment; None when it has nothing to do here.

    Call once at init, after the runner exists. Off when not enabled; on a worker only in raw mode.
    """
    if not config.enabled:
        return None
    if isinstance(environment.runner, WorkerRunner) and config.mode != "raw":
        return None
    monitor = Monitor(environment, config, token, run_id, custom_stats)
    # A bad URL shows now, before any user runs; the pool opens no connection until the first write.
    try:
        monitor._ensure_client()
    except Exception as error:  # noqa: BLE001 - a bad monitoring setting must not stop the load test
        monitor._warn_once(error)  # writes will fail, be counted and dropped
    log.info("monitoring: streaming %s metrics of run %s to %s (bucket %s)", config.mode, run_id,
             config.url, config.bucket)
    return monitor
