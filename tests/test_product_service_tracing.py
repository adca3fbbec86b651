"""W3C trace context: a valid `traceparent` is honoured and recorded in the access log, an invalid one ignored.

The end-to-end promise: a request sent with trace id X is found in the service's access log as
"trace id X got status S on path P", for successes and error answers alike, in both profiles.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import time
from dataclasses import dataclass

import pytest
from conftest import ROOT
from multidict import CIMultiDict
from test_product_service_hardening import Service, start  # noqa: F401 (start is a fixture)

from product_service.access_log import LINE, AccessRecord, parse_line, parse_lines
from product_service.tracecontext import TraceParent, incoming, parse_traceparent

CATALOG = json.loads((ROOT / "product_service" / "catalog.json").read_text(encoding="utf-8"))
PRODUCT = CATALOG[0]["name"]
LOG_DEADLINE_S = 10.0
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"
HEX16 = re.compile(r"[0-9a-f]{16}")
HEX32 = re.compile(r"[0-9a-f]{32}")
PROFILES = ["contract", "go"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    headers: dict[str, str]
    done: float  # time.monotonic() when the answer was read


def request(port: int, method: str, path: str, payload: dict | None = None, headers: dict[str, str] | None = None,
            timeout: float = 30.0) -> Answer:
    """One request on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = None if payload is None else json.dumps(payload).encode()
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, json.loads(data) if data else {}, {k.lower(): v for k, v in resp.getheaders()},
                      time.monotonic())
    finally:
        conn.close()


def access_records(service: Service, at_least: int) -> list[AccessRecord]:
    """The service's access log once it holds `at_least` records (lines are written just after each answer)."""
    deadline = time.monotonic() + LOG_DEADLINE_S
    while True:
        records = parse_lines(service.log().splitlines())
        if len(records) >= at_least or time.monotonic() > deadline:
            assert len(records) >= at_least, service.log()[-2000:]
            return records
        time.sleep(0.05)


# --- parsing, per the W3C Recommendation ---------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (VALID, TraceParent("00", TRACE, PARENT, 1)),
    (f"00-{TRACE}-{PARENT}-00", TraceParent("00", TRACE, PARENT, 0)),
    (f"00-{TRACE}-{PARENT}-ff", TraceParent("00", TRACE, PARENT, 255)),  # unknown flags are carried, not refused
    (f"01-{TRACE}-{PARENT}-01", TraceParent("01", TRACE, PARENT, 1)),
    (f"cc-{TRACE}-{PARENT}-01-what-the-future-adds", TraceParent("cc", TRACE, PARENT, 1)),  # a later version
])
def test_a_valid_traceparent_is_parsed(value, expected):
    assert parse_traceparent(value) == expected


@pytest.mark.parametrize("value", [
    "", "00", VALID[:-1], VALID + "0", VALID + "-", f"00-{TRACE}-{PARENT}-01-extra",  # version 00 is exactly 55
    f"00-{TRACE.upper()}-{PARENT}-01", f"00-{TRACE}-{PARENT.upper()}-01", f"00-{TRACE}-{PARENT}-0A", f"0A-{TRACE}-{PARENT}-01",
    f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
    f"00-{TRACE[:-1]}-{PARENT}-01", f"00-{TRACE}-{PARENT[:-1]}-01", f"00-{TRACE}x-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-1", f"00-{TRACE}-{PARENT}-0g", f"0-{TRACE}-{PARENT}-01", f"00_{TRACE}_{PARENT}_01",
    f"01-{TRACE}-{PARENT}-01x", f" 00-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-01\n",
])
def test_an_invalid_traceparent_is_ignored(value):
    assert parse_traceparent(value) is None


def test_two_traceparent_headers_are_no_parent():
    assert incoming(CIMultiDict([("traceparent", VALID)])) == parse_traceparent(VALID)
    assert incoming(CIMultiDict([("traceparent", VALID), ("traceparent", VALID)])) is None
    assert incoming(CIMultiDict()) is None


def test_the_documented_example_line_parses():
    line = ('access ts=1764755702.123456 request="POST /products/buy HTTP/1.1" status=404 duration_ms=1.234 '
            'queue_ms=- trace_id=4bf92f3577b34da6a3ce929d0e0e4736 parent_id=00f067aa0ba902b7 span_id=-')
    record = parse_line(line)
    assert record is not None and (record.method, record.path, record.status, record.trace_id, record.queue_ms) == (
        "POST", "/products/buy", 404, TRACE, None)
    assert parse_line("product_service: WARNING accept failed") is None and LINE.fullmatch(line)


# --- end to end: the log records the trace of each request it answers ----------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_the_log_finds_each_traced_request_with_its_status_and_path(start, profile):
    service = start("--profile", profile, "--access-log")
    sent = [  # (trace id, method, path, payload, expected status)
        ("11111111111111111111111111111111", "GET", "/products", None, 200),
        ("22222222222222222222222222222222", "POST", "/products/details", {"name": "No Such Thing"}, 404),
        ("33333333333333333333333333333333", "POST", "/products/buy", {"name": PRODUCT, "quantity": 10**9}, 400),
        ("44444444444444444444444444444444", "POST", "/products/buy", {"name": PRODUCT, "quantity": 1}, 200),
        ("55555555555555555555555555555555", "GET", "/products/category", None, 400),
        ("66666666666666666666666666666666", "DELETE", "/products", None, 405 if profile == "contract" else 500),
    ]
    for trace, method, path, payload, status in sent:
        answer = request(service.port, method, path, payload, {"traceparent": f"00-{trace}-{PARENT}-01"})
        assert answer.status == status
        assert not {"traceparent", "traceresponse"} & set(answer.headers)  # nothing echoed by default
    by_trace = {r.trace_id: r for r in access_records(service, len(sent))}
    for trace, method, path, _, status in sent:
        record = by_trace[trace]
        assert (record.method, record.path, record.status, record.parent_id, record.span_id) == (
            method, path, status, PARENT, None)


@pytest.mark.parametrize("profile", PROFILES)
def test_without_a_valid_traceparent_the_log_says_none(start, profile):
    service = start("--profile", profile, "--access-log")
    for headers in ({}, {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"}, {"traceparent": f"ff-{TRACE}-{PARENT}-01"}):
        assert request(service.port, "GET", "/products", headers=headers).status == 200
    records = access_records(service, 3)
    assert [(r.trace_id, r.parent_id) for r in records] == [(None, None)] * 3


def raw_get(port: int, target: bytes, traceparent: str = VALID) -> bytes:
    """A GET with exactly these target bytes; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\ntraceparent: " + traceparent.encode() +
                     b"\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_hostile_path_stays_one_parseable_line(start):
    service = start("--access-log")
    assert raw_get(service.port, b'/x"y\\z%0A?q=secret').startswith(b"HTTP/1.1 404 ")
    record, = access_records(service, 1)
    assert (record.trace_id, record.status, record.path) == (TRACE, 404, "/x%22y%5Cz%0A")
    assert "secret" not in service.log()


def test_a_request_the_http_parser_refuses_is_logged_too(start):
    service = start("--access-log")
    assert raw_get(service.port, "/caf\u00e9".encode()).startswith(b"HTTP/1.0 400 ")  # raw UTF-8 in a URL
    record, = access_records(service, 1)
    assert (record.method, record.path, record.http, record.status, record.trace_id) == (
        "UNKNOWN", "/", "1.0", 400, None)


def test_a_long_path_is_cut_and_marked(start):
    service = start("--access-log")
    assert request(service.port, "GET", "/" + "a" * 1000).status == 404
    assert access_records(service, 1)[0].path == "/" + "a" * 255 + "..."


def test_without_access_log_nothing_is_written(start):
    service = start()
    for _ in range(3):
        assert request(service.port, "GET", "/products", headers={"traceparent": VALID}).status == 200
    service.stop()
    assert service.log() == ""


# --- opt-in: the server span sent back -----------------------------------------------------------------

@pytest.mark.parametrize("profile, header", [("contract", "traceresponse"), ("go", "traceparent")])
def test_trace_response_sends_the_server_span_in_the_callers_trace(start, profile, header):
    service = start("--profile", profile, "--access-log", "--trace-response", header)
    answers = [request(service.port, "POST", "/products/details", {"name": "No Such Thing"},
                       {"traceparent": f"00-{TRACE}-{PARENT}-{flags}"}) for flags in ("01", "00")]
    spans = []
    for answer, sampled in zip(answers, ("01", "00")):
        version, trace, span, flags = answer.headers[header].split("-")
        assert (answer.status, version, trace, flags) == (404, "00", TRACE, sampled)
        assert HEX16.fullmatch(span) and span != PARENT
        spans.append(span)
    records = access_records(service, 2)
    assert [(r.trace_id, r.parent_id, r.span_id) for r in records] == [(TRACE, PARENT, s) for s in spans]


def test_trace_response_starts_a_new_trace_when_the_request_brings_none_valid(start):
    service = start("--access-log", "--trace-response", "traceparent")
    bad = f"00-{'0' * 32}-{PARENT}-01"
    answers = [request(service.port, "GET", "/health", headers=headers) for headers in ({}, {"traceparent": bad})]
    traces = []
    for answer in answers:
        version, trace, span, flags = answer.headers["traceparent"].split("-")
        assert version == "00" and HEX32.fullmatch(trace) and trace != "0" * 32 and HEX16.fullmatch(span)
        assert flags == "01"
        traces.append(trace)
    assert traces[0] != traces[1]
    records = access_records(service, 2)
    assert [(r.trace_id, r.parent_id) for r in records] == [(t, None) for t in traces]
