"""The machinery behind the suite's front doors (docs/architecture.md has the map)."""

# Written into every summary.json. Raise it when a change makes new runs measure something else than older ones
# (the task mix, a timing, the flash sale): the run history keeps runs of different versions apart.
SUITE_VERSION = "1"
