"""`python -m loadsuite.cli.health URL [DEADLINE_S [PID]]`: exit 0 once GET /health answers 200 within DEADLINE_S.

A service may still be starting: until the deadline, an answer that says "not yet" (a 5xx, 503 above all) and a
connection that fails (refused, reset, timed out) are asked again every POLL_S; a redirect or a 4xx is a wrong
target and ends the wait at once. When the wait ends without a 200, one line on stdout says why in words that tell
"not ready" (it answers, but not 200) apart from "unreachable" (no HTTP answer at all), exit 1. The first failed
attempt is noted on stderr with how long the wait may last, so a wait is never silent.
With PID (the bundled service just started), the wait also ends as soon as that process has exited.
"""
from __future__ import annotations

import os
import re
import sys
import time

from ..transport.service_client import ServiceClient, ServiceError

POLL_S = 0.05
ATTEMPT_S = 1.0  # one attempt's own deadline while waiting for a process that was just started
DEFAULT_DEADLINE_S = 10.0  # service.ready_timeout_seconds's default (config/schema.py)
_STATUS = re.compile(r"GET /health answered (\d{3})")


def _describe(error: ServiceError, deadline: float) -> str:
    return str(error).replace(f"no complete answer within {deadline:g} s",
                              f"timed out after {deadline:g} s: it accepts connections but does not answer")


def _running(pid: int) -> bool:
    """False once the process has exited (a zombie not yet reaped by its parent counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _status(why: str) -> int | None:
    """The HTTP status a failed health check saw, None when there was no HTTP answer."""
    match = _STATUS.search(why)
    return int(match.group(1)) if match else None


def verdict_line(why: str, waited_s: float, deadline_s: float) -> str:
    """What run_tests.sh says after "target URL is": "not ready" when the target answered but never 200, "unreachable"
    when no HTTP answer came, "not the product-service" for a redirect or a 4xx; each with the fix."""
    status = _status(why)
    if status is None and "a redirect" not in why:
        return f"unreachable ({why}): start the service or pass the right HOST"
    if status is not None and status >= 500:
        return (f"not ready (GET /health still answered {status} after {waited_s:.0f} s of asking): let it finish "
                f"starting, or wait longer with service.ready_timeout_seconds (now {deadline_s:g})")
    return f"not the product-service ({why}): pass the right HOST"


def wait_until_healthy(url: str, deadline_s: float, pid: int | None = None, note=None) -> str | None:
    """None once GET /health answers 200 within deadline_s, else why not: verdict_line's words, or with pid (a
    process just started) the last answer as it came."""
    started = time.monotonic()
    end = started + deadline_s
    noted = False
    while True:
        left = end - time.monotonic()
        attempt = round(max(0.1, min(ATTEMPT_S, left) if pid is not None else left), 1)
        try:
            ServiceClient(url, attempt).health()
            return None
        except ServiceError as error:
            why = _describe(error, attempt)
        status = _status(why)
        if status is not None and status < 500 or "a redirect" in why:
            return why if pid is not None else verdict_line(why, 0, deadline_s)  # asking again cannot help
        if pid is not None and not _running(pid):
            return f"the process exited; last answer: {why}"
        if time.monotonic() + POLL_S >= end:
            return why if pid is not None else verdict_line(why, time.monotonic() - started, deadline_s)
        if not noted and note is not None and pid is None:
            note(f"{url} has not answered 200 yet ({why}): asking again for up to {deadline_s:g} s "
                 "(service.ready_timeout_seconds)")
            noted = True
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    url = argv[0]
    deadline = float(argv[1]) if len(argv) > 1 else DEFAULT_DEADLINE_S
    pid = int(argv[2]) if len(argv) > 2 else None
    why = wait_until_healthy(url, deadline, pid, note=lambda text: print(f"run_tests.sh: {text}", file=sys.stderr,
                                                                          flush=True))
    if why is None:
        return 0
    print(why)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
