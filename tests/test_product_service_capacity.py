"""Capacity mode (`--handlers N --service-time-ms T`): N at once, T each, first come first served, /health apart.

The checks on time are lower bounds, which no amount of machine noise can break: N handlers of
T each cannot answer the k-th of a burst sooner than ceil(k / N) * T after it was sent. Where a test
must show that something did *not* hold a handler, it reads the service's own schedule from the
access log (`queue_ms`) instead of a stopwatch.
"""
from __future__ import annotations

import asyncio
import math
import subprocess
import threading
import time

import pytest
from conftest import PYTHON, ROOT
from test_product_service_cli import fails_to_start
from test_product_service_hardening import Service, start  # noqa: F401 (start is a fixture)
from test_product_service_tracing import CATALOG, PRODUCT, Answer, access_records, request

from product_service.rate_probe import measure

EPSILON_S = 0.001  # clock reading granularity between the test and the service; far below any T used here


def burst(port: int, count: int, method: str = "GET", path: str = "/products",
          payload: dict | None = None) -> tuple[float, list[Answer]]:
    """`count` requests sent at once from their own threads; (the time just before any was sent, the answers)."""
    answers: list[Answer] = []
    gate = threading.Barrier(count + 1)

    def one() -> None:
        gate.wait(timeout=10)
        answers.append(request(port, method, path, payload))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    sent = time.monotonic()
    gate.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == count, "a request of the burst did not finish"
    return sent, answers


def capacity_line(service: Service) -> str:
    return service.proc.stdout.readline().strip()


def assert_no_sooner_than_the_handlers_allow(sent: float, answers: list[Answer], handlers: int, service_s: float):
    for rank, done in enumerate(sorted(a.done for a in answers), start=1):
        floor = math.ceil(rank / handlers) * service_s
        assert done - sent >= floor - EPSILON_S, f"answer {rank} after {done - sent:.3f} s, sooner than {floor} s"


# --- the banner ----------------------------------------------------------------------------------------

def test_the_banner_states_the_true_capacity_after_the_listening_line(start):
    service = start("--handlers", "4", "--service-time-ms", "20")
    assert capacity_line(service) == ("capacity 200 requests/s: 4 handlers x 20 ms, queue unbounded (at most one "
                                      "request per open connection); /health bypasses the queue")


def test_the_banner_names_the_queue_bound(start):
    service = start("--handlers", "3", "--service-time-ms", "7.5", "--queue-limit", "10")
    assert capacity_line(service) == ("capacity 400 requests/s: 3 handlers x 7.5 ms, queue at most 10 waiting, "
                                      "beyond that 503; /health bypasses the queue")


# --- at most N at once, T each ---------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["contract", "go"])
def test_ten_requests_on_two_handlers_of_100_ms_take_at_least_500_ms(start, profile):
    service = start("--profile", profile, "--handlers", "2", "--service-time-ms", "100")
    sent, answers = burst(service.port, 10)
    assert [a.status for a in answers] == [200] * 10
    assert max(a.done for a in answers) - sent >= 0.5 - EPSILON_S
    assert_no_sooner_than_the_handlers_allow(sent, answers, handlers=2, service_s=0.1)


def test_the_access_log_shows_at_most_n_handled_at_once_and_first_come_first_served(start):
    service = start("--handlers", "2", "--service-time-ms", "200", "--access-log")
    sent, answers = burst(service.port, 6)
    records = access_records(service, 6)
    # Handler time of each request: from its arrival (answer time minus duration) plus its wait, for T.
    starts = sorted(r.ts - r.duration_ms / 1000 + r.queue_ms / 1000 for r in records)
    # Handlers busy at each start: the requests whose 200 ms began in the 200 ms up to it, itself included.
    busy = [sum(1 for other in starts if begin - 0.2 + EPSILON_S < other <= begin + EPSILON_S) for begin in starts]
    assert max(busy) == 2, (busy, records)
    assert all(r.duration_ms >= r.queue_ms + 200 - 1 for r in records)  # every answer after its handler time


def test_a_slow_burst_never_beats_the_capacity_whatever_the_endpoint(start):
    service = start("--handlers", "3", "--service-time-ms", "60")
    sent, answers = burst(service.port, 9, "POST", "/products/buy", {"name": PRODUCT, "quantity": 1})
    assert sorted(a.status for a in answers) == [200] * 9
    assert_no_sooner_than_the_handlers_allow(sent, answers, handlers=3, service_s=0.06)
    assert sorted(a.body["data"]["remainingStock"] for a in answers) == [CATALOG[0]["stock"] - k for k in range(9, 0, -1)]


# --- /health bypasses the queue ------------------------------------------------------------------------------

@pytest.mark.parametrize("profile, path", [("contract", "/health"), ("go", "/health"), ("go", "/Health/")])
def test_health_answers_while_every_handler_is_busy_and_requests_wait(start, profile, path):
    service = start("--profile", profile, "--handlers", "1", "--service-time-ms", "3000", "--access-log")
    results: list[Answer] = []
    waiting = [threading.Thread(target=lambda: results.append(request(service.port, "GET", "/products")))
               for _ in range(2)]
    for thread in waiting:
        thread.start()
    time.sleep(0.3)  # both are inside: one holds the only handler for 3 s, one waits behind it
    health = request(service.port, "GET", path)
    assert (health.status, health.body) == (200, {"status": "ok"})
    assert results == [], "the health check waited for a product request"
    for thread in waiting:
        thread.join(timeout=30)
    records = access_records(service, 3)
    probe = next(r for r in records if r.path == path)
    assert probe.queue_ms is None and probe.status == 200
    assert sorted(r.queue_ms for r in records if r.path == "/products")[1] > 0


# --- the bounded queue ----------------------------------------------------------------------------------------

def test_beyond_the_queue_bound_a_request_is_answered_503_at_once_and_changes_nothing(start):
    service = start("--handlers", "1", "--service-time-ms", "1500", "--queue-limit", "1")
    sent, answers = burst(service.port, 3, "POST", "/products/buy", {"name": PRODUCT, "quantity": 1})
    by_time = sorted(answers, key=lambda a: a.done)
    assert [a.status for a in by_time] == [503, 200, 200]
    assert by_time[0].body == {"status": "error", "error": {
        "code": "UNKNOWN_ERROR", "message": "Service at capacity (handlers busy: 1, requests waiting: 1); retry later"}}
    assert by_time[0].headers["content-type"] == "application/json"
    details = request(service.port, "POST", "/products/details", {"name": PRODUCT})
    assert details.body["data"]["stock"] == CATALOG[0]["stock"] - 2  # the refused buy never ran


def test_queue_limit_zero_refuses_whenever_every_handler_is_busy(start):
    service = start("--profile", "go", "--handlers", "2", "--service-time-ms", "1500", "--queue-limit", "0")
    _, answers = burst(service.port, 3)
    assert sorted(a.status for a in answers) == [200, 200, 503]
    refused = next(a for a in answers if a.status == 503)
    assert refused.body["error"]["code"] == "UNKNOWN_ERROR" and "server" not in refused.headers  # the go profile's


# --- with the other flags -----------------------------------------------------------------------------------

def test_latency_comes_after_the_handler_time_and_does_not_hold_the_handler(start):
    service = start("--handlers", "1", "--service-time-ms", "200", "--latency-ms", "400", "--access-log")
    sent, answers = burst(service.port, 2)
    records = sorted(access_records(service, 2), key=lambda r: r.queue_ms)
    first, second = records
    assert first.duration_ms >= 200 + 400 - 1 and second.duration_ms >= second.queue_ms + 200 + 400 - 1
    # Had the delay held the handler, the second would have waited for 200 + 400 ms.
    assert second.queue_ms <= 200 + 1


BUY = ("POST", "/products/buy", {"name": PRODUCT, "quantity": 1})


# The Go profile reads: its concurrent buys may collide on the data file and answer 500, as the real service does.
@pytest.mark.parametrize("flags, call, status", [(["--unsafe-buy"], BUY, 200), (["--error-rate", "1"], BUY, 500),
                                                 (["--profile", "go", "--latency-ms", "5"], ("GET", "/products", None), 200)])
def test_the_other_faults_apply_after_the_handler_time(start, flags, call, status):
    service = start(*flags, "--handlers", "2", "--service-time-ms", "150")
    sent, answers = burst(service.port, 4, *call)
    assert [a.status for a in answers] == [status] * 4
    assert_no_sooner_than_the_handlers_allow(sent, answers, handlers=2, service_s=0.15)


# --- bad values ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--handlers", "0", "--service-time-ms", "10"], "--handlers '0'"),
    (["--handlers", "many", "--service-time-ms", "10"], "--handlers 'many'"),
    (["--handlers", "1.5", "--service-time-ms", "10"], "--handlers '1.5'"),
    (["--handlers", "100001", "--service-time-ms", "10"], "1..100000"),
    (["--handlers", "2", "--service-time-ms", "0"], "--service-time-ms '0'"),
    (["--handlers", "2", "--service-time-ms", "-5"], "--service-time-ms '-5'"),
    (["--handlers", "2", "--service-time-ms", "nan"], "--service-time-ms 'nan'"),
    (["--handlers", "2", "--service-time-ms", "fast"], "--service-time-ms 'fast'"),
    (["--handlers", "2", "--service-time-ms", "60001"], "0.1..60000"),
    (["--handlers", "2", "--service-time-ms", "10", "--queue-limit", "-1"], "--queue-limit '-1'"),
    (["--handlers", "2", "--service-time-ms", "10", "--queue-limit", "lots"], "--queue-limit 'lots'"),
    (["--handlers", "2"], "--handlers needs --service-time-ms too"),
    (["--service-time-ms", "10"], "--service-time-ms needs --handlers too"),
    (["--queue-limit", "5"], "--queue-limit needs capacity mode"),
])
def test_a_bad_capacity_flag_exits_2_with_one_line(tmp_path, args, needle):
    assert needle in fails_to_start("--port", "0", "--db", str(tmp_path / "p.db"), *args)


# --- measured from outside with a constant rate (product_service.rate_probe) ------------------------------------

@pytest.mark.e2e
def test_offered_twice_its_capacity_the_service_answers_no_faster_than_its_capacity(start):
    service = start("--handlers", "1", "--service-time-ms", "20")  # 50 requests/s
    report = asyncio.run(measure(f"http://127.0.0.1:{service.port}", rate=100, seconds=2.5, warmup=0.5))
    assert report.offered_rps == 100.0 and report.skipped == 0
    assert set(report.statuses) == {"200"}
    # In 2 s one handler of 20 ms starts at most 100 requests, and one more may be under way.
    assert report.answered_rps <= (2.0 / 0.020 + 1) / 2.0
    assert report.p50_ms >= 20.0 and report.p99_ms >= report.p95_ms >= report.p50_ms


@pytest.mark.parametrize("args, needle", [
    (["--warmup", "2"], "--warmup 2: expected 0 <= WARMUP < --seconds (2)"), (["--rate", "0"], "--rate: '0'"),
    (["--connections", "0"], "--connections: '0'"), (["--url", "127.0.0.1:9"], "--url '127.0.0.1:9'"),
    (["--path", "products"], "--path 'products'"),
])
def test_the_rate_probe_refuses_bad_arguments_with_one_line(args, needle):
    command = {"--url": "http://127.0.0.1:9", "--rate": "5", "--seconds": "2"}
    command.update(zip(args[::2], args[1::2]))
    result = subprocess.run([PYTHON, "-m", "product_service.rate_probe", *(x for kv in command.items() for x in kv)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.count("\n") == 1 and needle in result.stderr and "Traceback" not in result.stderr
