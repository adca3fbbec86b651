"""Load and validate config.yaml into a typed, frozen object before any traffic is sent.

Every key is declared once in loadsuite/config/schema.py; config.yaml documents each with a comment.
Environment overrides: CONFIG_PATH (which file), PRODUCT_SERVICE_URL (service.base_url),
LOAD_SHAPE (load_shape.name), SERVICE_CLIENT (service.client), THRESHOLDS ("p95_ms=500,Buy_Product.p99_ms=900"),
INFLUXDB_TOKEN (monitoring token, never stored in a file).
Run `python config_loader.py [PATH]` to check a file: exit 0 when valid, 2 with one line when not.
"""
from __future__ import annotations

import sys

from loadsuite.config import *  # noqa: F401,F403 - the front door re-exports the whole config API
from loadsuite.config import ConfigError, load_config


def main(argv: list[str]) -> int:
    notes: list[str] = []
    try:
        config = load_config(argv[0] if argv else None, notes=notes)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"config note: {note}", file=sys.stderr)
    print(f"config ok: target {config.service.base_url}, shape {config.load_shape.name or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
