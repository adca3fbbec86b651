"""Load profiles (staged, spike, step) as pure objects: `Profile.at(t)` on any clock, so they test on a fake one."""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from ..config import ConfigError, LoadShapeConfig, Stage
from ..names import SHAPES

@dataclass(frozen=True)
class StageTick:
    """What the shape asks of Locust at one moment: the active stage and its targets."""

    index: int
    users: int
    spawn_rate: float
    user_classes: tuple[str, ...] | None
    target_rps: float | None
    started_at: float
    ends_at: float


class Profile:
    """A sequence of stages; stage i is active for start_i <= t < end_i, and nothing after the last."""

    def __init__(self, name: str, stages: Sequence[Stage]):
        if not stages:
            raise ConfigError(f"load_shape.{name}: the profile has no stages: list at least one")
        self.name = name
        self.stages = tuple(stages)
        self._ends = list(accumulate(stage.duration for stage in self.stages))
        self.total_duration: float = self._ends[-1]
        self.names_user_classes = any(stage.user_classes for stage in self.stages)

    def at(self, t: float) -> StageTick | None:
        """The stage active at run time t (seconds), or None once the last stage has ended."""
        index = bisect_right(self._ends, max(t, 0.0))
        if index >= len(self.stages):
            return None
        stage = self.stages[index]
        return StageTick(index, stage.users, stage.spawn_rate, stage.user_classes, stage.target_rps,
                         self._ends[index - 1] if index else 0.0, self._ends[index])

    def expected_users(self, t: float) -> float:
        """Users Locust should be running at t when each stage ramps toward its users at its spawn rate."""
        users, start = 0.0, 0.0
        for stage, end in zip(self.stages, self._ends):
            elapsed = min(t, end) - start
            step = stage.spawn_rate * elapsed
            users = stage.users if abs(stage.users - users) <= step else users + math.copysign(step, stage.users - users)
            if t < end:
                return users
            start = end
        return 0.0

    @property
    def peak_users(self) -> int:
        return max(stage.users for stage in self.stages)


def staged_profile(config: LoadShapeConfig, user_class_names: Iterable[str] | None = None) -> Profile:
    """The configured stages as they are, after checks pydantic cannot express."""
    known = set(user_class_names) if user_class_names is not None else None
    for i, stage in enumerate(config.staged.stages):
        key = f"load_shape.staged.stages[{i}]"
        if stage.user_classes is not None:
            if not stage.user_classes:
                raise ConfigError(f"{key}.user_classes: is empty: name at least one user class or remove the key")
            if len(set(stage.user_classes)) != len(stage.user_classes):
                raise ConfigError(f"{key}.user_classes: names a class twice: list each user class once")
            unknown = sorted(set(stage.user_classes) - known) if known is not None else []
            if unknown:
                raise ConfigError(f"{key}.user_classes: unknown user class {unknown[0]!r}: "
                                  f"use one of {', '.join(sorted(known))}")
        if stage.target_rps is not None and stage.users == 0:
            raise ConfigError(f"{key}.target_rps: a stage with 0 users sends no requests: "
                              "remove target_rps or give the stage users")
    return Profile("staged", config.staged.stages)


def spike_profile(config: LoadShapeConfig) -> Profile:
    """Baseline, a sudden spike, then recovery at the baseline (all at the spike's spawn rate)."""
    spike = config.spike
    if spike.spike_users <= spike.baseline_users:
        raise ConfigError(f"load_shape.spike.spike_users: {spike.spike_users} is not above baseline_users "
                          f"({spike.baseline_users}): a spike must add users")
    return Profile("spike", (
        Stage(duration=spike.baseline_seconds, users=spike.baseline_users, spawn_rate=spike.spawn_rate),
        Stage(duration=spike.spike_seconds, users=spike.spike_users, spawn_rate=spike.spawn_rate),
        Stage(duration=spike.recovery_seconds, users=spike.baseline_users, spawn_rate=spike.spawn_rate),
    ))


def step_profile(config: LoadShapeConfig) -> Profile:
    """step_users more every step_seconds up to max_users (the last step may be smaller), then one more hold."""
    step = config.step
    if step.max_users < step.step_users:
        raise ConfigError(f"load_shape.step.max_users: {step.max_users} is below step_users ({step.step_users}): "
                          "raise max_users or lower step_users")
    steps = math.ceil(step.max_users / step.step_users)
    users = [min(k * step.step_users, step.max_users) for k in range(1, steps + 1)] + [step.max_users]
    return Profile("step", tuple(
        Stage(duration=step.step_seconds, users=n, spawn_rate=step.spawn_rate) for n in users))


def profile_for(config: LoadShapeConfig, name: str | None = None,
                user_class_names: Iterable[str] | None = None) -> Profile:
    """The profile called `name` (default: config.name), validated; ConfigError with one line if invalid."""
    name = name or config.name
    if name == "staged":
        return staged_profile(config, user_class_names)
    if name == "spike":
        return spike_profile(config)
    if name == "step":
        return step_profile(config)
    raise ConfigError(f"load_shape.name: unknown shape {name!r}: use one of {', '.join(SHAPES)}")


def ascii_plot(profile: Profile, width: int = 60, height: int = 10) -> str:
    """Users over time as text; each column shows the expected users at the middle of its time slice."""
    seconds_per_column = profile.total_duration / width
    values = [profile.expected_users((col + 0.5) * seconds_per_column) for col in range(width)]
    peak = max(profile.peak_users, 1)
    label = len(str(peak))
    lines = [f"{profile.name}: {profile.total_duration:g} s, {len(profile.stages)} stages, "
             f"peak {profile.peak_users} users (one column = {seconds_per_column:.3g} s)"]
    for row in range(height, 0, -1):
        level = peak * row / height
        mark = f"{level:>{label}.0f}" if row in (height, (height + 1) // 2) else " " * label
        cells = "".join("#" if value >= level - peak / (2 * height) else " " for value in values)
        lines.append(f"{mark} |{cells.rstrip()}")
    lines.append(f"{'0':>{label}} +{'-' * width}")
    end = f"{profile.total_duration:g}s"
    lines.append(f"{' ' * label}  0s{end:>{width - 2}}")
    return "\n".join(lines)
