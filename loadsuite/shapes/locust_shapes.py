"""Locust LoadTestShape classes that follow a Profile; the locustfile picks one by config.load_shape.name."""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import ClassVar

from locust import LoadTestShape

from ..config import ConfigError, LoadShapeConfig
from ..names import SHAPES
from .profiles import Profile, StageTick, profile_for

logger = logging.getLogger(__name__)


class ProfileShape(LoadTestShape):
    """A LoadTestShape that follows a Profile; concrete classes are made by shape_class_for."""

    abstract = True  # Locust must not pick this base class up from a locustfile's namespace
    profile: ClassVar[Profile]

    def tick(self):
        stage = self.profile.at(self.get_run_time())
        if stage is None:
            return None
        if not self.profile.names_user_classes:
            return stage.users, stage.spawn_rate
        classes = self._user_classes(stage.user_classes)
        if classes is None:
            return None
        return stage.users, stage.spawn_rate, classes

    def current_stage(self) -> StageTick | None:
        """The active stage by this shape's clock (meaningful on the master or a local runner)."""
        return self.profile.at(self.get_run_time())

    def _user_classes(self, names: tuple[str, ...] | None) -> list | None:
        # A stage without names gets every class of the run explicitly: passing None would keep the
        # previous stage's selection in Locust's dispatcher.
        by_name = self.runner.user_classes_by_name
        if names is None:
            return list(by_name.values())
        unknown = [name for name in names if name not in by_name]
        if unknown:
            logger.error("load_shape.staged: user class %r is not part of this run: use one of %s",
                         unknown[0], ", ".join(sorted(by_name)))
            self.runner.environment.process_exit_code = 2
            return None
        return [by_name[name] for name in names]


_CLASS_NAMES = {"staged": "StagedLoadShape", "spike": "SpikeLoadShape", "step": "StepLoadShape"}


def make_shape_class(profile: Profile) -> type[ProfileShape]:
    """A concrete LoadTestShape class for a profile, named StagedLoadShape / SpikeLoadShape / StepLoadShape."""
    name = _CLASS_NAMES[profile.name]
    doc = f"The {profile.name} profile from config.load_shape ({profile.total_duration:g} s)."
    return type(name, (ProfileShape,), {"profile": profile, "__doc__": doc, "__module__": __name__})


def shape_class_for(config: LoadShapeConfig, user_class_names: Iterable[str] | None = None
                    ) -> type[ProfileShape] | None:
    """The shape class selected by config.name, or None for plain -u/-r/-t control.

    Give user_class_names to check stage user_classes before any traffic; otherwise they are
    resolved against the run's user classes at the first tick.
    """
    if config.name is None:
        return None
    return make_shape_class(profile_for(config, config.name, user_class_names))


def shape_class_or_exit(config: LoadShapeConfig, user_class_names: Iterable[str] | None = None
                        ) -> type[ProfileShape] | None:
    """shape_class_for, or a one-line error on stderr and exit code 2 (for the locustfile, before any traffic)."""
    try:
        return shape_class_for(config, user_class_names)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def all_shape_classes(config: LoadShapeConfig, user_class_names: Iterable[str] | None = None
                      ) -> dict[str, type[ProfileShape]]:
    """All three shape classes by class name (for Locust's --class-picker, which lists them in the web UI)."""
    names = list(user_class_names) if user_class_names is not None else None
    classes = (make_shape_class(profile_for(config, name, names)) for name in SHAPES)
    return {cls.__name__: cls for cls in classes}
