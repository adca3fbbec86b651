"""`--access-log`: one line per answered request on stderr, in one stable format that `LINE` parses.

    access ts=1764755702.123456 request="POST /products/buy HTTP/1.1" status=404 duration_ms=1.234 \
queue_ms=- trace_id=4bf92f3577b34da6a3ce929d0e0e4736 parent_id=00f067aa0ba902b7 span_id=-

(one line; the fields always in this order; each is described in docs/product_service_api_spec.md,
"The access log and trace context"). `LINE` below and the f-string in `AccessLog.log` are the
format's one home. Nothing is formatted when the log is off (aiohttp gets no logger at all); lines
are written in one batch per event-loop pass.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .tracecontext import ServerSpan, incoming

SPAN_KEY = "product_service.span"  # request[SPAN_KEY]: the ServerSpan, when --trace-response made one
QUEUE_KEY = "product_service.queue_s"  # request[QUEUE_KEY]: seconds waited for a handler (capacity mode)
MAX_PATH = 256
MAX_METHOD = 32
_UNSAFE = re.compile(r'[^!#-\[\]-~]')  # anything but printable ASCII without space, '"' and '\'
_KEEP = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "\\')
LINE = re.compile(
    r'access ts=(?P<ts>\d+\.\d{6}) request="(?P<method>[^ "]+) (?P<path>[^ "]+) HTTP/(?P<http>\d\.\d)" '
    r'status=(?P<status>\d{3}) duration_ms=(?P<duration_ms>\d+\.\d{3}) queue_ms=(?P<queue_ms>\d+\.\d{3}|-) '
    r'trace_id=(?P<trace_id>[0-9a-f]{32}|-) parent_id=(?P<parent_id>[0-9a-f]{16}|-) span_id=(?P<span_id>[0-9a-f]{16}|-)')


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One parsed access-log line; None stands for a `-` field."""

    ts: float
    method: str
    path: str
    http: str
    status: int
    duration_ms: float
    queue_ms: float | None
    trace_id: str | None
    parent_id: str | None
    span_id: str | None


def _optional(text: str) -> str | None:
    return None if text == "-" else text


def parse_line(line: str) -> AccessRecord | None:
    """The record of one access-log line, or None for any other line (warnings share stderr)."""
    match = LINE.fullmatch(line.rstrip("\n"))
    if match is None:
        return None
    g = match.group
    queue = g("queue_ms")
    return AccessRecord(float(g("ts")), g("method"), g("path"), g("http"), int(g("status")), float(g("duration_ms")),
                        None if queue == "-" else float(queue), _optional(g("trace_id")), _optional(g("parent_id")),
                        _optional(g("span_id")))


def parse_lines(lines: Iterable[str]) -> list[AccessRecord]:
    """Every access-log record among `lines`, in order."""
    return [record for line in lines if (record := parse_line(line)) is not None]


def _safe(text: str, limit: int) -> str:
    """Untrusted request text made safe for one logfmt field: percent-encoded, bounded."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if _UNSAFE.search(text) is None:
        return text
    return quote(text.encode("utf-8", "surrogateescape"), safe=_KEEP)


class Sink:
    """Lines collected during one event-loop pass and written to a file descriptor in one call.

    `spans` and `queue` say whether requests may carry a server span (--trace-response) and a queue wait
    (capacity mode), so that the logger only looks them up when they can be there.
    """

    def __init__(self, fd: int = 2, *, spans: bool = False, queue: bool = False) -> None:
        self._fd = fd
        self.spans, self.queue = spans, queue
        self._lines: list[str] = []
        self._scheduled = False

    def add(self, line: str) -> None:
        self._lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            data, self._lines = "".join(self._lines).encode("utf-8", "replace"), []
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError:
                pass  # a closed or full stderr must not fail requests; the lines are dropped


class AccessLog(AbstractAccessLogger):
    """aiohttp's access-logger interface; aiohttp passes our Sink as its `logger` (see app.make_server)."""

    __slots__ = ()

    def log(self, request: BaseRequest, response: StreamResponse, time_s: float) -> None:
        sink: Sink = self.logger  # type: ignore[assignment]
        span: ServerSpan | None = request.get(SPAN_KEY) if sink.spans else None
        if span is not None:
            parent = span.parent
            trace_id, span_id = span.trace_id, span.span_id
        else:
            parent = incoming(request.headers)
            trace_id, span_id = (parent.trace_id if parent is not None else "-"), "-"
        queued = request.get(QUEUE_KEY) if sink.queue else None
        version = request.version
        sink.add(
            f'access ts={time.time():.6f} request="{_safe(request.method, MAX_METHOD)} '
            f'{_safe(request.raw_path.partition("?")[0], MAX_PATH)} HTTP/{version.major}.{version.minor}" '
            f'status={response.status} duration_ms={time_s * 1000.0:.3f} '
            f'queue_ms={"-" if queued is None else format(queued * 1000.0, ".3f")} trace_id={trace_id} '
            f'parent_id={parent.parent_id if parent is not None else "-"} span_id={span_id}\n')
