"""W3C Trace Context: the `traceparent` a request brings, parsed strictly, and the service's own server span.

The real service runs Fiber's otelfiber middleware with the W3C TraceContext propagator: a valid
`traceparent` makes its server span a child in the same trace, an invalid one is ignored (a new
trace). The rules here are the W3C Recommendation's (https://www.w3.org/TR/trace-context/):
lower-case hex only; version `ff` is invalid; version `00` is exactly 55 characters; a later
version may carry more fields after a `-`; an all-zero trace id or parent id is invalid; two
`traceparent` headers are invalid. Go's propagator differs in two corners, documented in
docs/product_service_api_spec.md (it takes the first of two headers, and accepts a `-` after the
flags of version 00).
"""
from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

HEADER = "traceparent"
RESPONSE_HEADERS = ("traceparent", "traceresponse")  # what --trace-response may send back
_FORM = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
SAMPLED = 0x01


class TraceParent(NamedTuple):
    """A valid incoming traceparent: the caller's trace and its span (the parent of ours)."""

    version: str
    trace_id: str
    parent_id: str
    flags: int


@dataclass(frozen=True, slots=True)
class ServerSpan:
    """The span the service opens for one request: in the caller's trace, or in a new one."""

    trace_id: str
    span_id: str
    parent: TraceParent | None

    def header_value(self) -> str:
        """The span as a version-00 traceparent/traceresponse value; only the sampled flag carries over."""
        sampled = self.parent.flags & SAMPLED if self.parent is not None else SAMPLED
        return f"00-{self.trace_id}-{self.span_id}-{sampled:02x}"


def parse_traceparent(value: str) -> TraceParent | None:
    """The traceparent in `value`, or None when it is not valid (the request then starts a new trace)."""
    match = _FORM.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(version, trace_id, parent_id, int(flags, 16))


def incoming(headers: Mapping[str, str]) -> TraceParent | None:
    """The request's traceparent: exactly one header, valid; anything else is no parent."""
    try:
        values = headers.getall(HEADER, ())  # type: ignore[attr-defined]  # a multidict
    except AttributeError:  # the plain dict of a request the HTTP parser refused
        values = [value for key, value in headers.items() if key.lower() == HEADER]
    return parse_traceparent(values[0]) if len(values) == 1 else None


def new_trace_id() -> str:
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def server_span(parent: TraceParent | None) -> ServerSpan:
    """A new span: a child of `parent` in its trace, else the root of a new trace."""
    return ServerSpan(parent.trace_id if parent is not None else new_trace_id(), new_span_id(), parent)
