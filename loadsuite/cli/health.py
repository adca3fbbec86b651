"""`python -m loadsuite.cli.health URL [DEADLINE_S [PID]]`: exit 0 when GET /health answers 200 in time, else 1 and why.

With PID (a service just started), it asks again every POLL_S until the service answers, the process exits or
DEADLINE_S runs out: one process waits for the bundled service, not one per attempt.
"""
from __future__ import annotations

import os
import sys
import time

from ..transport.service_client import ServiceClient, ServiceError

POLL_S = 0.05
ATTEMPT_S = 1.0  # one attempt's own deadline while waiting for a service to come up


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


def main(argv: list[str]) -> int:
    url, deadline = argv[0], float(argv[1]) if len(argv) > 1 else 3.0
    if len(argv) < 3:
        try:
            ServiceClient(url, deadline).health()
        except ServiceError as error:
            print(_describe(error, deadline))
            return 1
        return 0
    pid, end = int(argv[2]), time.monotonic() + deadline
    while True:
        attempt = max(0.1, min(ATTEMPT_S, end - time.monotonic()))
        try:
            ServiceClient(url, attempt).health()
            return 0
        except ServiceError as error:
            why = _describe(error, attempt)
        if not _running(pid):
            print(f"the process exited; last answer: {why}")
            return 1
        if time.monotonic() + POLL_S >= end:
            print(why)
            return 1
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
