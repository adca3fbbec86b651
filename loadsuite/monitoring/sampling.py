"""Aggregate sampling: each interval, the deltas of Locust's own stats entries become points (no per-request work)."""
from __future__ import annotations

import logging
import time
from bisect import bisect_left
from typing import Any

import gevent
from locust.stats import calculate_response_time_percentile, diff_response_time_dicts

from .lines import _escape_key, _flatten, _line

log = logging.getLogger("monitoring")

_TOTAL_KEY = ("__total__", "")
# Fixed histogram boundaries in ms (le tags). Locust rounds response times to 2 significant digits above
# 100 ms, so finer boundaries there would add points without precision. The SLO defaults (1000, 2000) are
# boundaries, so "share of requests under the SLO" is exact. Changing this list changes the series.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000,
                      10000, 30000, 60000)
_LE_TAGS = tuple(f",le={bound}" for bound in LATENCY_BUCKETS_MS) + (",le=+Inf",)
MAX_REASONS = 200  # distinct failure-reason tags per run; later ones share "(other)"
MAX_REASON_LENGTH = 120




class IntervalSampler:
    """The Monitor's sampling half: the writing half (buffer, writer greenlet) is in influx.py."""

    # ----- aggregate sampling ---------------------------------------------------------------

    def _entries(self):
        stats = self.environment.stats
        yield from list(stats.entries.items())
        yield _TOTAL_KEY, stats.total

    @staticmethod
    def _snapshot(entry) -> tuple:
        return (entry.num_requests, entry.num_failures, dict(entry.response_times), entry.total_response_time)

    def _has_new_counts(self) -> bool:
        total = self.environment.stats.total
        prev = self._prev.get(_TOTAL_KEY)
        return prev is None or (total.num_requests, total.num_failures) != prev[:2]

    def _sample_loop(self) -> None:
        interval = self.config.flush_interval_seconds
        next_at = time.monotonic() + interval
        while True:
            gevent.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            try:
                self._sample()
            except Exception as error:  # noqa: BLE001 - monitoring must never end a run
                log.debug("monitoring: sampling failed: %s", self._scrub(error))

    def _sample(self) -> None:
        """Append one point per request name that saw traffic since the last sample, plus run points."""
        now_mono = time.monotonic()
        elapsed = max(now_mono - self._last_sample, 1e-6)
        self._last_sample = now_mono
        ts = time.time_ns()
        run_fields: dict[str, Any] = {}
        for key, entry in self._entries():
            prev = self._prev.get(key)
            current = self._snapshot(entry)
            self._prev[key] = current
            if prev is None or current[0] < prev[0] or current[1] < prev[1]:
                prev = (0, 0, {}, 0)  # new entry, or the stats were reset
            count = current[0] - prev[0]
            failures = current[1] - prev[1]
            if key == _TOTAL_KEY:
                run_fields = {"count": count, "failures": failures, "rps": count / elapsed,
                              "failure_ratio": failures / count if count else 0.0}
                continue
            if not count and not failures:
                continue
            fields: dict[str, Any] = {"count": count, "failures": failures, "rps": count / elapsed}
            times = diff_response_time_dicts(current[2], prev[2])
            timed = sum(times.values())
            if count:
                fields["avg"] = (current[3] - prev[3]) / count
            if timed:
                fields["p50"] = float(calculate_response_time_percentile(times, timed, 0.50))
                fields["p95"] = float(calculate_response_time_percentile(times, timed, 0.95))
                fields["p99"] = float(calculate_response_time_percentile(times, timed, 0.99))
            tags = self._base_tags + self._request_tags(*key)
            self._push(_line(self._m_requests, tags, fields, ts))
            if timed:
                self._push_histogram(tags, times, ts)
        self._sample_failures(ts)
        if self._count_statuses:
            self._sample_statuses(ts)
        runner = self.environment.runner
        run_fields["users"] = runner.user_count if runner is not None else 0
        self._push(_line(self._m_run, self._base_tags, run_fields, ts))
        if runner is not None:
            # A master's own user_classes_count is all zeros: its workers run the users and report them.
            per_class = getattr(runner, "reported_user_classes_count", None)
            per_class = runner.user_classes_count if per_class is None else per_class
            for user_class, users in sorted(per_class.items()):
                self._push(f"{self._m_users}{self._base_tags},user_class={_escape_key(user_class)} "
                           f"users={int(users)}i {ts}")
        if self._custom_stats is not None:
            try:
                custom = _flatten(self._custom_stats() or {})
            except Exception as error:  # noqa: BLE001 - a broken callable must not stop the stream
                if not self._custom_warned:
                    self._custom_warned = True
                    log.warning("monitoring: custom stats callable failed (%s); custom fields are skipped",
                                self._scrub(error))
                custom = {}
            self._push(_line(self._m_custom, self._base_tags, custom, ts))
        self.max_buffered = max(self.max_buffered, len(self._buffer))
        if self._writer is not None:
            self._writer_wake()

    def _push_histogram(self, tags: str, times: dict[int, int], ts: int) -> None:
        """One cumulative bucket count per boundary (and +Inf) of this interval's response times."""
        # Lines by hand, not influxdb_client.Point: measured 66 us a point with Point (tags, field, time,
        # to_line_protocol) against 1 us for this f-string; ~600 points a sample for the suite's request names.
        counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        for response_time, count in times.items():
            counts[bisect_left(LATENCY_BUCKETS_MS, response_time)] += count
        prefix, total = f"{self._m_latency}{tags}", 0
        for le, count in zip(_LE_TAGS, counts):
            total += count
            self._push(f"{prefix}{le} bucket={total}i {ts}")

    def _error_counts(self) -> dict[str, int]:
        return {key: error.occurrences for key, error in list(self.environment.stats.errors.items())}

    def _sample_failures(self, ts: int) -> None:
        """One point per (request, reason) whose count grew since the last sample (Locust's error table)."""
        errors = self.environment.stats.errors
        current = self._error_counts()
        for key, occurrences in current.items():
            before = self._prev_errors.get(key, 0)
            grown = occurrences - (before if before <= occurrences else 0)  # smaller: the stats were reset
            if grown <= 0:
                continue
            error = errors.get(key)
            if error is None:
                continue
            tags = self._request_tags(error.name, error.method) + self._reason_tag(error.error)
            self._push(f"{self._m_failures}{self._base_tags}{tags} count={grown}i {ts}")
        self._prev_errors = current

    def _reason_tag(self, error) -> str:
        text = error if isinstance(error, str) else repr(error)
        tag = self._reasons.get(text)
        if tag is None:
            if len(self._reasons) >= MAX_REASONS:  # the cache (and the tag's cardinality) stays bounded
                return ",reason=(other)"
            tag = f",reason={_escape_key(_failure_reason(text))}"
            self._reasons[text] = tag
        return tag

    def _sample_statuses(self, ts: int) -> None:
        current = dict(self._statuses)
        for (name, method, status), count in current.items():
            grown = count - self._prev_statuses.get((name, method, status), 0)
            if grown > 0:
                self._push(f"{self._m_responses}{self._base_tags}{self._request_tags(name, method)}"
                           f",status={status} count={grown}i {ts}")
        self._prev_statuses = current

    def _request_tags(self, name: str, method: str) -> str:
        tags = self._tag_cache.get((name, method))
        if tags is None:
            tags = f",name={_escape_key(name or 'unnamed')},method={_escape_key(method or 'unknown')}"
            if len(self._tag_cache) < 10_000:
                self._tag_cache[(name, method)] = tags
        return tags



def _failure_reason(text: str) -> str:
    """A short, low-cardinality reason from Locust's error text: the exception's message, cut."""
    for wrapper in ("CatchResponseError(", "HTTPError(", "CheckFailed("):
        if text.startswith(wrapper) and text.endswith(")"):
            text = text[len(wrapper):-1].strip("'\"")
            break
    text = " ".join(text.split())
    return text[:MAX_REASON_LENGTH] or "unknown"
