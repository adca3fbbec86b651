"""Offer a running service a constant request rate (an open model) and measure what it sustains.

`python -m product_service.rate_probe --url http://127.0.0.1:8082 --rate 200 [--seconds 10] [--path /products]`
sends request i at start + i / rate whatever the service does (no request waits for an earlier
answer), measures each latency from its scheduled time (so a stall counts in full), and prints one
JSON object: the rate offered and the rate answered after the warm-up, latency percentiles
(nearest rank) and answers by status. It is how capacity mode's accuracy is measured: below the
true capacity the answered rate follows the offered one at about the service time; above it the
answered rate stays at the capacity and the latency grows. Bounded: at most --max-in-flight
requests at once (more are counted as `skipped`, not sent), each with a --timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NoReturn

import aiohttp

START_DELAY_S = 0.05


@dataclass(frozen=True, slots=True)
class RateReport:
    offered_rps: float  # requests scheduled per second after the warm-up
    answered_rps: float  # answers (any status) completed per second in the same window
    answered: int
    skipped: int  # not sent: --max-in-flight requests were already waiting
    statuses: dict[str, int]  # of the requests scheduled after the warm-up ("timeout", "error" when none came)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def nearest_rank(sorted_values: list[float], share: float) -> float:
    """The smallest value with at least `share` of the values at or below it (0.0 for no values)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(share * len(sorted_values)) - 1)]


async def measure(base: str, rate: float, seconds: float, *, path: str = "/products", warmup: float = 1.0,
                  connections: int = 512, timeout: float = 10.0, max_in_flight: int = 4096) -> RateReport:
    """Offer `rate` requests/s of GET `path` for `seconds`; the first `warmup` seconds are not counted."""
    loop = asyncio.get_running_loop()
    url = base + path
    start = loop.time() + START_DELAY_S
    window_start, window_end = start + warmup, start + seconds
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    answered = skipped = in_flight = 0
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def one(scheduled: float) -> None:
            nonlocal answered, in_flight
            try:
                async with session.get(url) as response:
                    await response.read()
                    outcome = str(response.status)
            except asyncio.TimeoutError:
                outcome = "timeout"
            except aiohttp.ClientError:
                outcome = "error"
            finally:
                in_flight -= 1
            done = loop.time()
            if window_start <= done <= window_end and outcome not in ("timeout", "error"):
                answered += 1
            if scheduled >= window_start:
                statuses[outcome] += 1
                if outcome not in ("timeout", "error"):
                    latencies.append(done - scheduled)

        for index in range(int(rate * seconds)):
            scheduled = start + index / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                skipped += 1
                continue
            in_flight += 1
            task = loop.create_task(one(scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=timeout + 1.0)
    window = seconds - warmup
    latencies.sort()
    offered = int(rate * seconds) - math.ceil(warmup * rate)  # the requests scheduled at or after the warm-up
    return RateReport(offered_rps=round(offered / window, 1), answered_rps=round(answered / window, 1),
                      answered=answered, skipped=skipped, statuses=dict(sorted(statuses.items())),
                      p50_ms=_ms(nearest_rank(latencies, 0.50)), p95_ms=_ms(nearest_rank(latencies, 0.95)),
                      p99_ms=_ms(nearest_rank(latencies, 0.99)), max_ms=_ms(latencies[-1] if latencies else 0.0))


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m product_service.rate_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the running service, e.g. http://127.0.0.1:8082")
    parser.add_argument("--rate", type=_positive, required=True, help="requests per second offered")
    parser.add_argument("--seconds", type=_positive, default=10.0, help="how long (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds at the start not counted (default 1)")
    parser.add_argument("--path", default="/products", help="the GET path (default /products)")
    parser.add_argument("--connections", type=_count, default=512, help="open connections at most (default 512)")
    parser.add_argument("--timeout", type=_positive, default=10.0, help="seconds per request (default 10)")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.seconds:
        parser.error(f"--warmup {args.warmup:g}: expected 0 <= WARMUP < --seconds ({args.seconds:g})")
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url {args.url!r}: expected a base URL such as http://127.0.0.1:8082")
    if not args.path.startswith("/"):
        parser.error(f"--path {args.path!r}: expected a path starting with /, e.g. /products")
    report = asyncio.run(measure(args.url.rstrip("/"), args.rate, args.seconds, path=args.path, warmup=args.warmup,
                                 connections=args.connections, timeout=args.timeout))
    print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
