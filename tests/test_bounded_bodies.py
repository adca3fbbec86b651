"""No answer can make the load generator read without end (loadsuite/transport/bodies.py).

A hostile server (tests/hostile_server.py, its own process) answers with bodies that never end, announce 4 GiB,
or inflate from a few KiB to 64 MiB (gzip, deflate, brotli), or with a head that never ends. Through both Locust clients, bounded at 1 MiB,
each such request must fail with the reason `too_large`, promptly, while well-formed answers in every encoding
and in many small chunks still read whole. Then the whole suite against an endless answer: the run ends on
time, with `too_large` failures and bounded memory (before the bound it grew to 10 GB and never ended).
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import free_port
from suite_runs import run_suite

HOSTILE = Path(__file__).with_name("hostile_server.py")
LIMIT = 2**20
REFUSED = ["firehose", "huge_length", "gzip_bomb", "deflate_bomb", "br_bomb"]
READ_WHOLE = ["length_ok", "chunked_ok", "gzip_ok", "deflate_ok", "raw_deflate_ok", "br_ok"]


def _start_hostile(default_mode: str = "firehose") -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HOSTILE), str(port), default_mode],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the hostile server did not listen: {proc.communicate(timeout=10)[1][-500:]!r}")


@pytest.fixture(scope="module")
def hostile():
    proc, url = _start_hostile()
    try:
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _read_with(client: str, url: str, path: str, requests: int = 3, method: str = "GET"):
    """Locust users of this client, bodies bounded at LIMIT, `method` `path` until `requests` are done (<= 20 s);
    a GET's answer must be a valid product list, a HEAD's a 200."""
    import gevent
    from locust import FastHttpUser, HttpUser, constant, task
    from locust.env import Environment

    from loadsuite.transport.bodies import bound_fast_session, bound_requests_session
    from validators import expect_product_list

    class Reader(FastHttpUser if client == "fast" else HttpUser):
        wait_time = constant(0.01)

        def on_start(self):
            (bound_fast_session if client == "fast" else bound_requests_session)(self.client, LIMIT)

        @task
        def read(self):
            with self.client.request(method, path, name="Get_All_Products", catch_response=True) as resp:
                if method == "GET":
                    expect_product_list(resp)
                elif resp.status_code != 200:
                    resp.failure(f"status {resp.status_code}")

    environment = Environment(user_classes=[Reader], host=url)
    runner = environment.create_local_runner()
    started = time.monotonic()
    runner.start(1, spawn_rate=10)
    while environment.stats.total.num_requests < requests and time.monotonic() - started < 20:
        gevent.sleep(0.02)
    runner.quit()
    return environment, time.monotonic() - started


@pytest.mark.parametrize("client", ["fast", "requests"])
@pytest.mark.parametrize("mode", REFUSED)
def test_an_answer_beyond_the_limit_fails_as_too_large_and_is_not_read_on(hostile, client, mode):
    rss_before = psutil.Process().memory_info().rss
    environment, seconds = _read_with(client, hostile, f"/{mode}")
    total = environment.stats.total
    errors = {str(entry.error) for entry in environment.stats.errors.values()}
    assert total.num_requests >= 3 and total.num_failures == total.num_requests, (total.num_requests, errors)
    assert errors and all("too_large: answer larger than 1 MiB" in error for error in errors), errors
    assert seconds < 20, "three refused answers must not take the whole deadline"
    assert psutil.Process().memory_info().rss - rss_before < 256 * 2**20


@pytest.mark.parametrize("client", ["fast", "requests"])
def test_a_head_request_for_a_large_resource_is_not_refused(hostile, client):
    """A HEAD answer announces the resource's length and carries no body: nothing to refuse."""
    environment, _ = _read_with(client, hostile, "/head_4gib", method="HEAD")
    errors = {str(entry.error) for entry in environment.stats.errors.values()}
    assert environment.stats.total.num_requests >= 3 and environment.stats.total.num_failures == 0, errors


@pytest.mark.parametrize("client", ["fast", "requests"])
def test_a_head_that_never_ends_fails_the_request_promptly(hostile, client):
    """geventhttpclient sets no bound on a head: before MAX_HEAD_BYTES a FastHttpUser read header lines for ever
    (no request completed in 20 s). requests' http.client stops at 100 headers."""
    environment, seconds = _read_with(client, hostile, "/endless_head")
    total = environment.stats.total
    errors = {str(entry.error) for entry in environment.stats.errors.values()}
    assert total.num_requests >= 3 and total.num_failures == total.num_requests, errors
    assert not environment.runner.exceptions, environment.runner.exceptions
    expected = ("too_large: answer head (status line and headers) larger than 1 MiB" if client == "fast"
                else "connection: HTTPException")
    assert errors == {expected}, errors


@pytest.mark.parametrize("client", ["fast", "requests"])
@pytest.mark.parametrize("mode", READ_WHOLE)
def test_a_well_formed_answer_within_the_limit_reads_whole_in_any_encoding(hostile, client, mode):
    environment, _ = _read_with(client, hostile, f"/{mode}")
    total = environment.stats.total
    errors = {str(entry.error) for entry in environment.stats.errors.values()}
    assert total.num_requests >= 3 and total.num_failures == 0, errors


@pytest.mark.parametrize("client", ["fast", "requests"])
def test_an_unknown_content_encoding_is_handed_over_undecoded_by_both_clients(hostile, client):
    """geventhttpclient alone raised a ValueError out of the request (a traceback); requests hands the body over
    as it came. Both now do the latter, and the checks judge the body (here a valid product list)."""
    environment, _ = _read_with(client, hostile, "/bad_encoding")
    errors = {str(entry.error) for entry in environment.stats.errors.values()}
    assert environment.stats.total.num_requests >= 3 and environment.stats.total.num_failures == 0, errors
    assert not environment.runner.exceptions, environment.runner.exceptions


@pytest.mark.parametrize("mode", ["firehose", "huge_length"])
def test_the_oracle_client_refuses_an_endless_answer_at_its_size_cap_not_at_its_deadline(hostile, mode):
    """service_client (health, stock snapshots, contention setup) caps answers at 64 MiB. It used to look for the
    end of the head in a join of everything read so far, once per chunk: 23-41 s to reach the cap, never
    yielding while the socket had data, so it ran into its deadline instead (measured; now 0.07 s)."""
    from loadsuite.transport.service_client import MAX_RESPONSE_BYTES, ServiceClient, ServiceError

    with pytest.raises(ServiceError) as refused:
        ServiceClient(hostile, deadline_s=10).request("GET", f"/{mode}")
    assert str(refused.value) == f"GET /{mode}: answer larger than {MAX_RESPONSE_BYTES // 2**20} MiB"


def test_the_oracle_client_refuses_a_head_that_never_ends(hostile):
    from loadsuite.transport.service_client import ServiceClient, ServiceError

    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"^GET /endless_head: answer head too long \(over 100 header lines"):
        ServiceClient(hostile, deadline_s=10).request("GET", "/endless_head")
    assert time.monotonic() - started < 9, "refused at the parser's bound, not at the deadline"


@pytest.mark.e2e
def test_the_suite_against_an_endless_answer_ends_on_time_with_bounded_memory(tmp_path):
    proc, url = _start_hostile("firehose")
    try:
        run = run_suite("headless", "2", "4", url, "--no-analysis", results_root=tmp_path / "results", timeout=120)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert run.returncode == 1, run.explain()
    assert run.seconds < 60, run.explain()  # 4 s of load, the oracle's 5-s snapshots, the start and the end
    failures = run.failures()
    reasons = {row["Error"] for row in failures}
    # Every answer is 200 and endless: a request read it to the limit; a negative case that expects a 4xx fails on
    # the status first (a true reason too); nothing else.
    assert any("too_large: answer larger than 16 MiB" in reason for reason in reasons), reasons
    odd = {reason for reason in reasons if "too_large: answer larger than 16 MiB" not in reason
           and not re.search(r"status: expected 4\d\d, saw 200", reason)}
    assert not odd, odd
    locust = run.role("locust")
    assert locust and max(child.peak_rss for child in locust) < 1024 * 2**20, [c.peak_rss for c in locust]
    assert not run.survivors, run.survivors
