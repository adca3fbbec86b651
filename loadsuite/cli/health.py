"""`python -m loadsuite.cli.health URL [DEADLINE_S]`: exit 0 when GET /health answers 200 in time, else 1 and why."""
from __future__ import annotations

import sys

from ..service_client import ServiceClient, ServiceError


def main(argv: list[str]) -> int:
    url, deadline = argv[0], float(argv[1]) if len(argv) > 1 else 3.0
    try:
        ServiceClient(url, deadline).health()
    except ServiceError as error:
        print(str(error).replace(f"no complete answer within {deadline:g} s",
                                 f"timed out after {deadline:g} s: it accepts connections but does not answer"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
