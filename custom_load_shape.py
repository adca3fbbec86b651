"""Load shapes (staged, spike, step) computed from config.load_shape, for Locust's LoadTestShape.

The timing lives in `Profile` (loadsuite/shapes/profiles.py), a pure object with `at(t)` and
`total_duration`, tested on a fake clock; the Locust classes (loadsuite/shapes/locust_shapes.py) only
read the run time and ask the profile. The locustfile picks the class named by config.load_shape.name.
`python custom_load_shape.py --plot staged|spike|step [--config PATH]` prints users over time as ASCII.
"""
from __future__ import annotations

import argparse
import sys

from loadsuite.config import ConfigError, load_config
from loadsuite.names import SHAPES
from loadsuite.shapes.locust_shapes import (ProfileShape, all_shape_classes, make_shape_class, shape_class_for,
                                            shape_class_or_exit)
from loadsuite.shapes.profiles import (Profile, StageTick, ascii_plot, profile_for, spike_profile, staged_profile,
                                       step_profile)

__all__ = ["ProfileShape", "all_shape_classes", "make_shape_class", "shape_class_for", "shape_class_or_exit",
           "Profile", "StageTick", "ascii_plot", "profile_for", "spike_profile", "staged_profile", "step_profile"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Print a load shape's users over time.")
    parser.add_argument("--plot", choices=SHAPES, required=True, help="the profile to draw")
    parser.add_argument("--config", help="config file (default: CONFIG_PATH or config.yaml)")
    parser.add_argument("--width", type=int, default=60)
    parser.add_argument("--height", type=int, default=10)
    args = parser.parse_args(argv)
    if args.width < 10 or args.height < 2:
        print("error: --width must be at least 10 and --height at least 2", file=sys.stderr)
        return 2
    try:
        profile = profile_for(load_config(args.config).load_shape, args.plot)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    print(ascii_plot(profile, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
