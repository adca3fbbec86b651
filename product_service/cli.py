"""Command line, environment equivalents and the serve loop of `python -m product_service`."""
from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .capacity import MAX_HONEST_RPS, Capacity, parse_handlers, parse_queue_limit, parse_service_ms
from .catalog import DEFAULT_CATALOG, CatalogError, load_catalog
from .faults import Faults, parse_error_rate, parse_latency
from .hardening import ACCEPT_BURST, BODY_TIMEOUT_S, FD_MARGIN, HEADER_TIMEOUT_S, Limits
from .store import StoreError, Store
from .tracecontext import RESPONSE_HEADERS

PROG = "product_service"
DEFAULT_PORT = 8082
SHUTDOWN_TIMEOUT_S = 10.0
LISTEN_BACKLOG = 1024
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}
PROFILES = ("contract", "go")
log = logging.getLogger("product_service")


class UsageError(Exception):
    """A bad flag, environment value or resource; exits 2 with one line."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    db: Path
    catalog: Path
    reset: bool
    faults: Faults
    access_log: bool
    profile: str = "contract"
    limits: Limits = Limits()
    capacity: Capacity | None = None
    trace_response: str | None = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 0..65535 (0 picks a free port)")
    return port


def _checked(parse, text: str):  # type: ignore[no-untyped-def]
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: expected seconds 0..3600 (0 turns it off)")
    return value


def _connections(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid connection count {text!r}: expected an integer >= 1")
    return value


def default_db_path(environ: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME (or ~/.cache)/product-service/products.db, else .data/products.db here."""
    base = environ.get("XDG_CACHE_HOME") or (str(Path.home() / ".cache") if environ.get("HOME") else "")
    if base:
        folder = Path(base) / "product-service"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder / "products.db"
        except OSError:
            pass
    return Path(".data") / "products.db"


def _env_bool(environ: Mapping[str, str], key: str) -> bool:
    value = environ.get(key, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{key}={environ[key]!r} is not a boolean; set it to true or false")


def _env_ms(environ: Mapping[str, str], key: str, default: float) -> float:
    text = environ.get(key, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{key}={text!r} is not a number of milliseconds; set e.g. {key}={default:.0f}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m {PROG}", allow_abbrev=False,
                     description="Reference product-service (the load-test suite's target).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=None,
                        help=f"port (default $PRODUCT_SERVICE_PORT or {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--db", type=Path, default=None,
                        help="SQLite file (default $XDG_CACHE_HOME/product-service/products.db, ~/.cache/..., "
                             "or .data/products.db); a new file is seeded from the catalogue")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG,
                        help="products to seed the database with: a JSON list, or the real Go service's data file "
                             "(an object keyed by product name) as it is (default: the shipped catalogue)")
    parser.add_argument("--reset", action="store_true", help="reseed the database from the catalogue")
    parser.add_argument("--latency-ms", type=lambda t: _checked(parse_latency, t), default=None, metavar="MIN:MAX",
                        help="uniform random delay per request, e.g. 20:80 or 50 (default: from "
                             "SIMULATE_DELAY_ENABLED/_MIN_MS/_MAX_MS, else none)")
    parser.add_argument("--error-rate", type=lambda t: _checked(parse_error_rate, t), default=0.0, metavar="R",
                        help="share of requests (all but /health) answered 500 UNKNOWN_ERROR, 0..1")
    parser.add_argument("--unsafe-buy", action="store_true",
                        help="reproduce the Go service's lost-update buy: about 7%% of concurrent buys are lost")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="contract (default, or $PRODUCT_SERVICE_PROFILE): the exact HTTP contract; go: the real "
                             "Go service as observed, defects included (lenient routing, 500 for 404/405, torn reads, "
                             "lost updates, per-layer delays)")
    parser.add_argument("--header-timeout", type=_seconds, default=HEADER_TIMEOUT_S, metavar="S",
                        help=f"close a connection whose request head is not complete S seconds after its first byte "
                             f"(default {HEADER_TIMEOUT_S:g}; 0 off)")
    parser.add_argument("--body-timeout", type=_seconds, default=BODY_TIMEOUT_S, metavar="S",
                        help=f"answer 408 when a request body is not complete S seconds after its head "
                             f"(default {BODY_TIMEOUT_S:g}; 0 off)")
    parser.add_argument("--max-connections", type=_connections, default=None, metavar="N",
                        help=f"open connections at most (default: the open-file limit minus {FD_MARGIN}); at the cap "
                             "a new connection replaces the oldest one still waiting for a request, else gets 503")
    parser.add_argument("--access-log", action="store_true",
                        help='one line per answered request on stderr: access ts=UNIX_S request="METHOD PATH HTTP/1.1" '
                             "status=N duration_ms=MS queue_ms=MS|- trace_id=32HEX|- parent_id=16HEX|- span_id=16HEX|- "
                             "(trace_id and parent_id from a valid W3C traceparent; format in "
                             "product_service/access_log.py)")
    parser.add_argument("--trace-response", choices=RESPONSE_HEADERS, default=None,
                        help="send the service's server span back in this header, 00-TRACE_ID-SPAN_ID-FLAGS: "
                             "traceparent as otelfiber since v1.2 does, or traceresponse (W3C Trace Context Level 2 "
                             "draft); the trace is the request's valid traceparent's, else a new one (default: none)")
    capacity = parser.add_argument_group(
        "capacity mode", f"a known capacity of N*1000/MS requests/s: every request except those to /health "
        f"(which bypass the queue, so readiness checks never wait) waits first come, first served for one of "
        f"N handlers and holds it for exactly MS milliseconds, then is handled as usual (--latency-ms, "
        f"--error-rate, --unsafe-buy and --profile go add their delays and faults after that, without holding the "
        f"handler). The capacity is printed at start. Honest up to about {MAX_HONEST_RPS:.0f} requests/s (verified "
        f"on a 2-core machine shared with the load generator); above that the CPU, not the handlers, may set the limit")
    capacity.add_argument("--handlers", type=lambda t: _checked(parse_handlers, t), default=None, metavar="N",
                          help="concurrent handlers (needs --service-time-ms)")
    capacity.add_argument("--service-time-ms", type=lambda t: _checked(parse_service_ms, t), default=None,
                          metavar="MS", help="the fixed time each request holds a handler (needs --handlers)")
    capacity.add_argument("--queue-limit", type=lambda t: _checked(parse_queue_limit, t), default=None, metavar="Q",
                          help="requests waiting for a handler at most Q; the next is answered 503 UNKNOWN_ERROR at "
                               "once (default: no bound but --max-connections, one request per connection)")
    return parser


def _capacity(args: argparse.Namespace) -> Capacity | None:
    if args.handlers is None and args.service_time_ms is None:
        if args.queue_limit is not None:
            raise UsageError("--queue-limit needs capacity mode: add --handlers N --service-time-ms MS")
        return None
    if args.handlers is None or args.service_time_ms is None:
        given, missing = ("--handlers", "--service-time-ms") if args.service_time_ms is None \
            else ("--service-time-ms", "--handlers")
        raise UsageError(f"{given} needs {missing} too: e.g. --handlers 4 --service-time-ms 20 for 200 requests/s")
    return Capacity(args.handlers, args.service_time_ms, args.queue_limit)


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Flags win over the environment; every problem raises UsageError with the fix."""
    args = build_parser().parse_args(argv)
    port = args.port
    if port is None:
        env_port = environ.get("PRODUCT_SERVICE_PORT", "").strip()
        try:
            port = _port(env_port) if env_port else DEFAULT_PORT
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"PRODUCT_SERVICE_PORT: {exc}") from None
    latency = args.latency_ms
    if args.latency_ms is None and _env_bool(environ, "SIMULATE_DELAY_ENABLED"):
        low = _env_ms(environ, "SIMULATE_DELAY_MIN_MS", 10.0)
        high = _env_ms(environ, "SIMULATE_DELAY_MAX_MS", 100.0)
        try:
            latency = parse_latency(f"{low}:{high}")
        except ValueError:
            raise UsageError(f"SIMULATE_DELAY_MIN_MS={low:g} / SIMULATE_DELAY_MAX_MS={high:g}: "
                             "need 0 <= MIN <= MAX") from None
    profile = args.profile
    if profile is None:
        profile = environ.get("PRODUCT_SERVICE_PROFILE", "").strip().lower() or "contract"
        if profile not in PROFILES:
            raise UsageError(f"PRODUCT_SERVICE_PROFILE={environ['PRODUCT_SERVICE_PROFILE']!r} is not a profile; "
                             f"set it to {' or '.join(PROFILES)}")
    return Settings(host=args.host, port=port, db=args.db or default_db_path(environ), catalog=args.catalog,
                    reset=args.reset, faults=Faults(latency, args.error_rate, args.unsafe_buy),
                    access_log=args.access_log, profile=profile,
                    limits=Limits(args.header_timeout, args.body_timeout, args.max_connections),
                    capacity=_capacity(args), trace_response=args.trace_response)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for host:port (the first address the host resolves to)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _bind_error(settings: Settings, exc: OSError) -> UsageError:
    where = f"{settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return UsageError(f"port {settings.port} on {settings.host} is already in use; "
                          "stop the other process or choose another --port")
    if exc.errno == errno.EACCES:
        return UsageError(f"no permission to listen on {where}; choose a port above 1023 with --port")
    return UsageError(f"cannot listen on {where}: {exc.strerror or exc}; check --host and --port")


async def serve(settings: Settings) -> int:
    """Open the store, listen, print the banner, and run until SIGTERM or SIGINT."""
    from aiohttp import web  # imported here so that a bad flag is reported without waiting for aiohttp

    from .access_log import Sink
    from .app import ProductService, make_server
    from .go_profile import GoProductService
    from .hardening import AcceptErrors

    try:
        store = Store.open(settings.db, load_catalog(settings.catalog), reset=settings.reset)
    except (StoreError, CatalogError) as exc:
        raise UsageError(str(exc)) from None
    loop = asyncio.get_running_loop()
    accept_errors = AcceptErrors(loop)
    loop.set_exception_handler(accept_errors)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    service = (GoProductService if settings.profile == "go" else ProductService)(store, settings.faults)
    sink = Sink(spans=settings.trace_response is not None, queue=settings.capacity is not None) \
        if settings.access_log else None
    server = make_server(service, access_log=sink, limits=settings.limits, capacity=settings.capacity,
                         trace_response=settings.trace_response)
    runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    server.guard.start(loop)
    try:
        await runner.setup()
        try:
            sock = listening_socket(settings.host, settings.port)
            # asyncio accepts up to `backlog` sockets per loop tick before any of them reaches the connection
            # cap; a small burst keeps the file limit out of reach, and listen() again restores the kernel queue.
            await web.SockSite(runner, sock, backlog=ACCEPT_BURST).start()
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            raise _bind_error(settings, exc) from None
        port = runner.addresses[0][1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"listening on http://{host}:{port}", flush=True)
        if settings.capacity is not None:
            print(settings.capacity.banner(), flush=True)
            if settings.capacity.requests_per_s > MAX_HONEST_RPS:
                log.warning("a capacity of %.0f requests/s is above the about %.0f this mode was verified to "
                            "emulate honestly: the CPU, not the handlers, may set the limit",
                            settings.capacity.requests_per_s, MAX_HONEST_RPS)
        await stopping.wait()
    finally:
        server.guard.stop()
        await runner.cleanup()  # stops listening, lets in-flight requests finish, then closes connections
        if sink is not None:
            sink.flush()
        store.close()
        accept_errors.report()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
        logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s %(message)s")
        return asyncio.run(serve(settings))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
