"""The command line of run_tests.sh: parse and validate every mode, option and Locust argument before any traffic.

run_tests.sh keeps what belongs in a shell (the venv, processes, signals) and asks this module what to run:
`python -m loadsuite.cli.run_args MODE [ARGS...]` prints shell assignments on stdout (eval'd by the script)
or one line on stderr and exit code 2. `--help` lists every mode and option.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass, field

from ..config import ConfigError, load_config
from ..config.schema import MAX_RPS, MAX_SECONDS, MAX_SPAWN_RATE, MAX_USERS
from ..config.urls import normalise_base_url
from .. import catalogue
from ..shapes.profiles import profile_for
from ..names import CLIENTS, SHAPES

# Bounds on the command line: the config's own (schema.py; docs/reliability.md lists them) and the workers.
MAX_DURATION_S = MAX_SECONDS
MAX_WORKERS = 256

MODES = {
    "headless": "USERS (default 10) users for DURATION_S (default 60) s against HOST (default: the bundled service)",
    "ui": "Locust's web UI on http://127.0.0.1:8089 (WEB_HOST/WEB_PORT to change) against HOST",
    "distributed": "WORKERS (default 2) local worker processes and a master, then as headless",
    "master": "a master that waits for EXPECT_WORKERS (default 1) workers from other machines, then as headless",
    "capacity": "search for the highest rate HOST sustains within its SLOs and prove it (config.yaml capacity; "
                "docs/capacity.md); --workers N spreads the load over N local Locust workers",
    "worker": "a worker that connects to MASTER_HOST (port MASTER_PORT, default 5557)",
    "test": "the project's tests: ./run_tests.sh test [pytest args], e.g. -m \"not e2e\" for the quick set",
}
POSITIONALS = {
    "headless": ("USERS", "DURATION_S", "HOST"),
    "ui": ("HOST",),
    "distributed": ("WORKERS", "USERS", "DURATION_S", "HOST"),
    "master": ("USERS", "DURATION_S", "HOST"),
    "worker": ("MASTER_HOST",),
    "capacity": ("HOST",),
}
DEFAULTS = {"USERS": "10", "DURATION_S": "60", "WORKERS": "2", "HOST": "", "MASTER_HOST": ""}


class UsageError(Exception):
    """One line that names the problem and the fix."""


@dataclass
class Plan:
    mode: str
    users: int = 10
    duration_s: int = 60
    workers: int = 2
    host: str = ""
    master_host: str = ""
    shape: str = ""
    client: str = ""
    thresholds: list[str] = field(default_factory=list)
    config: str = ""
    spawn_rate: str = ""
    analysis: bool = True
    shape_active: bool = False
    require_capacity: str = ""  # capacity: exit 1 below this proven rate
    ready_s: float = 10.0  # service.ready_timeout_seconds: how long the health check asks again
    locust_extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_notes: list[str] = field(default_factory=list)  # said only once traffic is about to start (not for exit 3/4)

    def shell(self) -> str:
        """Assignments for run_tests.sh to eval (every value quoted)."""
        q = shlex.quote
        lines = [f"MODE={q(self.mode)}", f"USERS={self.users}", f"DURATION={self.duration_s}",
                 f"WORKERS={self.workers}", f"REQUIRE_CAPACITY={q(self.require_capacity)}", f"HOST={q(self.host)}", f"MASTER_HOST={q(self.master_host)}",
                 f"SPAWN_RATE={q(self.spawn_rate)}", f"ANALYSIS={1 if self.analysis else 0}",
                 f"SHAPE_ACTIVE={1 if self.shape_active else 0}", f"READY_S={self.ready_s:g}",
                 "LOCUST_EXTRA=(" + " ".join(q(arg) for arg in self.locust_extra) + ")",
                 "RUN_NOTES=(" + " ".join(q("run_tests.sh: " + note) for note in self.run_notes) + ")"]
        if self.shape:
            lines.append(f"export LOAD_SHAPE={q(self.shape)}")
        if self.client:
            lines.append(f"export SERVICE_CLIENT={q(self.client)}")
        if self.thresholds:
            lines.append(f"export THRESHOLDS={q(','.join(self.thresholds))}")
        if self.config:
            lines.append(f"export CONFIG_PATH={q(self.config)}")
        lines += [f"echo {q('run_tests.sh: ' + note)} >&2" for note in self.notes]
        return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./run_tests.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load-test product-service with Locust: a report and a verdict (exit code) per run.\n\n"
                    + "\n".join(f"  ./run_tests.sh {mode} {' '.join(f'[{name}]' for name in POSITIONALS.get(mode, ()))}"
                                 .rstrip() + f"\n      {text}" for mode, text in MODES.items()),
        epilog="Anything after -- goes to Locust unchanged (user classes, --tags, --processes ...).\n"
               "Exit codes: 0 passed (capacity: a rate was proven, at least --require-capacity), 1 a threshold or the\n"
               "consistency oracle failed (capacity: no rate proven, or below --require-capacity), 2 bad configuration or usage\n"
               "(before any traffic), 3 target unreachable, 4 results could not be written, 5 Locust died,\n"
               "130 a second Ctrl-C/SIGTERM stopped the run at once.\n"
               "Environment: RESULTS_ROOT, WEB_HOST, WEB_PORT, MASTER_PORT, MASTER_BIND_HOST, EXPECT_WORKERS,\n"
               "STOP_TIMEOUT, CONFIG_PATH, PRODUCT_SERVICE_URL, LOAD_SHAPE, SERVICE_CLIENT, THRESHOLDS, INFLUXDB_TOKEN.")
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True)
    for mode, text in MODES.items():
        sub = modes.add_parser(mode, help=text, description=text)
        if mode == "test":
            continue
        for name in POSITIONALS[mode]:
            sub.add_argument(name.lower(), nargs="?" if name != "MASTER_HOST" else None, metavar=name,
                             default=DEFAULTS[name])
        sub.add_argument("--shape", choices=[*SHAPES, "none"], help="load shape; it decides users and duration")
        sub.add_argument("--client", choices=CLIENTS, help="Locust client: fast (geventhttpclient, default) or requests")
        sub.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                         help="override a threshold, repeatable: p95_ms=500, Buy_Product.p99_ms=900, error_rate=off "
                              "(off/false/none: no limit), consistency=false")
        sub.add_argument("--config", metavar="FILE", help="config file (default config.yaml or CONFIG_PATH)")
        sub.add_argument("--spawn-rate", metavar="R", help="users started per second (default USERS/5, at least 2)")
        sub.add_argument("--no-analysis", action="store_true", help="skip summary.md and the charts")
        if mode == "capacity":
            sub.add_argument("--workers", metavar="N", help="capacity: local Locust worker processes (default 0: one "
                                                            "process; add workers when the generator is the limit)")
            sub.add_argument("--require-capacity", metavar="RATE",
                             help="capacity: exit 1 when the proven capacity is below RATE requests/s (a CI gate)")
    return parser


def _whole(name: str, text: str, upper: int) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{name} must be a positive whole number, got {text!r}")
    if int(text) > upper:
        raise UsageError(f"{name} {text} is above the limit of {upper:,}: use a smaller value")
    return int(text)


def plan(argv: list[str], env: dict[str, str] | None = None) -> Plan:
    """Parse and validate run_tests.sh's arguments; UsageError with one line on any problem."""
    env = dict(os.environ if env is None else env)
    ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = build_parser()
    args = _parse(parser, ours)
    result = Plan(mode=args.mode, locust_extra=extra)
    names = POSITIONALS[args.mode]
    values = {name: getattr(args, name.lower()) for name in names}
    if "USERS" in values:
        result.users = _whole("USERS", values["USERS"], MAX_USERS)
    if "DURATION_S" in values:
        result.duration_s = _whole("DURATION_S", values["DURATION_S"], MAX_DURATION_S)
    if "WORKERS" in values:
        result.workers = _whole("WORKERS", values["WORKERS"], MAX_WORKERS)
    if args.mode == "capacity":
        result.workers = 0 if args.workers is None else _whole("--workers", args.workers, MAX_WORKERS)
        if args.require_capacity is not None:
            result.require_capacity = _rate("--require-capacity", args.require_capacity)
        if args.shape:
            raise UsageError("capacity sets the rate itself: drop --shape (the search's knobs are config.yaml capacity)")
    if values.get("HOST"):
        result.host = _host(values["HOST"])
    if args.mode == "worker":
        result.master_host = values["MASTER_HOST"]
        if not result.master_host or result.master_host.startswith("-"):
            raise UsageError("worker needs MASTER_HOST: ./run_tests.sh worker 10.0.0.5")
    result.shape = args.shape or ""
    result.client = args.client or ""
    result.thresholds = list(args.threshold)
    result.config = args.config or ""
    result.analysis = not args.no_analysis
    if args.spawn_rate is not None:
        result.spawn_rate = _spawn_rate(args.spawn_rate)
    _check_config(result, env)
    return result


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The mode, then its positionals and options in any order (as the shell script always allowed)."""
    def fail(message: str) -> None:
        raise UsageError(f"{_plain(message)}: see ./run_tests.sh --help")

    modes = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    if not argv or argv[0] not in modes:
        fail(f"unknown mode {argv[0] if argv else ''!r}: use one of {', '.join(MODES)}")
    sub = modes[argv[0]]
    sub.error = fail  # type: ignore[method-assign]
    args = sub.parse_intermixed_args(argv[1:])
    args.mode = argv[0]
    return args


NEEDS = {"--shape": "a value", "--client": "a value", "--threshold": "KEY=VALUE", "--config": "a file",
         "--spawn-rate": "a number", "--workers": "a number",
         "--require-capacity": "a rate"}


def _plain(message: str) -> str:
    """argparse's wording in the words of this command line."""
    if match := re.match(r"unrecognized arguments: (.+)", message):
        return f"unknown option {match.group(1)}"
    if match := re.match(r"argument --(\w[\w-]*): invalid choice: '([^']*)' \(choose from (.*)\)", message):
        return f"unknown {match.group(1)} '{match.group(2)}': use one of {match.group(3).replace(chr(39), '')}"
    if match := re.match(r"argument (--[\w-]+): expected one argument", message):
        return f"{match.group(1)} needs {NEEDS.get(match.group(1), 'a value')}"
    if "required: MASTER_HOST" in message:
        return "worker needs MASTER_HOST: ./run_tests.sh worker 10.0.0.5"
    return message


def _host(text: str, name: str = "HOST") -> str:
    try:
        return normalise_base_url(text)
    except ValueError as error:
        raise UsageError(f"{name} {error}") from None


def _positive(text: str, most: float, error: str) -> str:
    """text when it is a finite number above 0 and at most `most`; else a UsageError with `error`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > most:
        raise UsageError(f"{error}, got {text!r}")
    return text


def _rate(name: str, text: str) -> str:
    return _positive(text, MAX_RPS, f"{name} must be a rate in requests/s above 0 and at most {MAX_RPS:g}")


def _spawn_rate(text: str) -> str:
    return _positive(text, MAX_SPAWN_RATE, f"--spawn-rate must be a number above 0 and at most {MAX_SPAWN_RATE:g}")


def _check_config(result: Plan, env: dict[str, str]) -> None:
    """The config file with this run's overrides, and the Locust arguments against it, before any traffic."""
    if result.shape:
        env["LOAD_SHAPE"] = result.shape
    if result.client:
        env["SERVICE_CLIENT"] = result.client
    if result.thresholds:
        env["THRESHOLDS"] = ",".join(result.thresholds)
    if result.config:
        env["CONFIG_PATH"] = result.config
    notes: list[str] = []
    try:
        config = load_config(None, env, notes)
    except ConfigError as error:
        raise UsageError(f"config error: {error}") from None
    check_locust_arguments(result.locust_extra, config)
    result.ready_s = config.service.ready_timeout_seconds
    result.notes += [f"config note: {note}" for note in notes]
    shape = config.load_shape.name
    result.shape_active = shape is not None
    if result.mode in ("headless", "distributed", "master"):  # the run's planned length is known: can the sale open?
        planned = profile_for(config.load_shape).total_duration if shape else result.duration_s
        if (why := config.flash_sale.cannot_open_within(planned)) is not None:
            result.run_notes.append(f"note: {why}")
    if shape and result.mode in ("headless", "distributed", "master"):
        result.notes.append(f"the {shape} shape decides users and duration (USERS/DURATION_S are not used): "
                            f"see docs/load_shapes.md")


def check_locust_arguments(extra: list[str], config) -> None:
    """Locust's own arguments (after --) against the suite: catalogue.check_locust_arguments, as a UsageError."""
    try:
        catalogue.check_locust_arguments(extra, config)
    except catalogue.CatalogueError as error:
        raise UsageError(str(error)) from None


def full_help() -> str:
    """Every mode, then the options they share (one help for ./run_tests.sh --help and MODE --help)."""
    parser = build_parser()
    modes = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    options = modes["headless"].format_help().partition("options:")[2]
    return parser.format_help() + "\nOptions of every mode but test:" + options


def main(argv: list[str] | None = None) -> int:
    """Shell code on stdout for run_tests.sh to eval; help and errors on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    shell_out, sys.stdout = sys.stdout, sys.stderr  # argparse's own output must not reach the eval'd stdout
    try:
        if not argv or argv[0] in ("-h", "--help", "help") or ("-h" in argv or "--help" in argv) and "--" not in argv:
            # run_tests.sh prints the help on its stdout: shell code that prints it, then exits (2 without a mode)
            print(f"printf '%s\\n' {shlex.quote(full_help())}", file=shell_out)
            print("exit 0" if argv else "exit 2", file=shell_out)
            return 0
        print(plan(argv).shell(), end="", file=shell_out)
        return 0
    except UsageError as error:
        print(f"run_tests.sh: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # argparse exiting by itself
        print(f"exit {done.code or 0}", file=shell_out)
        return 0
    finally:
        sys.stdout = shell_out


if __name__ == "__main__":
    sys.exit(main())
