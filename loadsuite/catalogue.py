"""The shop's tasks and user types, read from locustfile.py, their one home, without importing it.

Locust loads the locustfile's classes; what checks a config file or a command line before Locust starts
(config_loader.py, run_tests.sh's arguments, the config schema) reads the same names, weights and tags from
its source with `ast`. The locustfile then applies this reading to its own classes (`ShopUser.__init_subclass__`
calls `task_weights`), so the two cannot disagree. The rules, as a Locust user writes them:

- A task is a method of a user type decorated with Locust's `@task` or `@task(N)` (N, a literal, is its
  weight when config.yaml does not name it) and `@tag("...")`.
- A user type is a class deriving from ShopUser (BASE); it runs its base's tasks and its own, or, when it
  assigns `tasks = [ShopUser.a, ShopUser.b]`, only those of its base's tasks, each with its own weight, plus
  its own. Its `weight` is config.yaml's `user_types.<name>` when named, else the class's. A class with
  `on_demand = True` runs only when named on the command line or picked (or a tag of its tasks is chosen).
- config.yaml weighs tasks in `scenario_weights` and, for tasks tagged `negative`, `negative_weights`.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfile.py"
BASE = "ShopUser"
NEGATIVE = "negative"  # the tag of the expected 4xx paths (negative_weights)


class CatalogueError(ValueError):
    """locustfile.py declares a task or user type the rules above cannot read; one line saying where."""


@dataclass(frozen=True)
class Task:
    name: str
    weight: int  # the @task decorator's
    tags: tuple[str, ...]

    @property
    def negative(self) -> bool:
        return NEGATIVE in self.tags


@dataclass(frozen=True)
class UserType:
    name: str
    weight: int  # the class's own
    tasks: tuple[str, ...]  # in the order Locust sees them
    on_demand: bool


@dataclass(frozen=True)
class Catalogue:
    tasks: Mapping[str, Task]
    user_types: Mapping[str, UserType]

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(sorted({tag for task in self.tasks.values() for tag in task.tags}))

    @property
    def scenario_tasks(self) -> tuple[str, ...]:
        return tuple(name for name, task in self.tasks.items() if not task.negative)

    @property
    def negative_tasks(self) -> tuple[str, ...]:
        return tuple(name for name, task in self.tasks.items() if task.negative)

    @property
    def weighted_user_types(self) -> tuple[str, ...]:
        """User types that run by weight (user_types in config.yaml), not only on demand."""
        return tuple(name for name, user in self.user_types.items() if not user.on_demand)

    def task_weights(self, user_type: str, configured: Mapping[str, int]) -> dict[str, int]:
        """{task: weight} a user type runs, configured weights over the decorators', weight-0 tasks left out."""
        weights = {name: configured.get(name, self.tasks[name].weight) for name in self.user_types[user_type].tasks}
        return {name: weight for name, weight in weights.items() if weight > 0}


def configured_task_weights(config) -> dict[str, int]:
    """scenario_weights and negative_weights of a SuiteConfig as one {task: weight} (the only merge of the two)."""
    return {**config.scenario_weights, **config.negative_weights}


@lru_cache(maxsize=4)
def read(path: Path = LOCUSTFILE) -> Catalogue:
    """The catalogue of a locustfile (cached: one parse per process)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError) as error:
        raise CatalogueError(f"cannot read the tasks of {path.name}: {error}") from None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    tasks: dict[str, Task] = {}
    resolved: dict[str, tuple[tuple[str, ...], bool]] = {}  # class -> (its tasks, abstract)

    def class_tasks(name: str, seen: tuple[str, ...] = ()) -> tuple[str, ...]:
        if name in resolved:
            return resolved[name][0]
        node = classes[name]
        inherited: list[str] = []
        for base in _base_names(node):
            if base in classes and base not in seen and _is_user_class(base, classes):
                inherited += [t for t in class_tasks(base, (*seen, name)) if t not in inherited]
        own = []
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and (task := _task_of(item, path)) is not None:
                if task.name in tasks and tasks[task.name] != task:
                    raise CatalogueError(f"{path.name}:{item.lineno}: task {task.name} is defined twice")
                tasks[task.name] = task
                own.append(task.name)
        listed = _listed_tasks(node, path)
        if listed is not None:
            missing = [t for t in listed if t not in inherited]
            if missing:
                raise CatalogueError(f"{path.name}:{node.lineno}: {name}.tasks names {missing[0]}, which is not a "
                                     f"task of its base: use one of {', '.join(inherited)}")
            inherited = list(listed)
        result = tuple([*inherited, *(t for t in own if t not in inherited)])
        resolved[name] = (result, bool(_literal(node, "abstract", False, path)))
        return result

    user_types: dict[str, UserType] = {}
    for name, node in classes.items():
        if name == BASE or not _derives_from_base(name, classes):
            continue
        found = class_tasks(name)
        if _literal(node, "abstract", False, path):
            continue
        weight = _literal(node, "weight", 1, path)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise CatalogueError(f"{path.name}:{node.lineno}: {name}.weight must be a literal whole number >= 0")
        user_types[name] = UserType(name, weight, found, bool(_literal(node, "on_demand", False, path)))
    if BASE in classes:
        class_tasks(BASE)
    return Catalogue(tasks, user_types)


def _base_names(node: ast.ClassDef) -> list[str]:
    return [base.id for base in node.bases if isinstance(base, ast.Name)]


def _is_user_class(name: str, classes: dict[str, ast.ClassDef]) -> bool:
    return name == BASE or _derives_from_base(name, classes)


def _derives_from_base(name: str, classes: dict[str, ast.ClassDef], depth: int = 0) -> bool:
    if depth > 20 or name not in classes:
        return False
    return any(base == BASE or _derives_from_base(base, classes, depth + 1) for base in _base_names(classes[name]))


def _task_of(node: ast.FunctionDef, path: Path) -> Task | None:
    weight, tags = None, ()
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        func = call.func if call else decorator
        label = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if label == "task":
            weight = 1
            if call and call.args:
                weight = _constant(call.args[0], path, f"@task of {node.name}")
                if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                    raise CatalogueError(f"{path.name}:{node.lineno}: @task({ast.unparse(call.args[0])}) of "
                                         f"{node.name}: the weight must be a literal whole number >= 0")
        elif label == "tag" and call:
            tags = tuple(_constant(arg, path, f"@tag of {node.name}") for arg in call.args)
    return None if weight is None else Task(node.name, weight, tags)


def _listed_tasks(node: ast.ClassDef, path: Path) -> tuple[str, ...] | None:
    for item in node.body:
        if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "tasks" for t in item.targets):
            if not isinstance(item.value, (ast.List, ast.Tuple)):
                raise CatalogueError(f"{path.name}:{item.lineno}: {node.name}.tasks must be a list of "
                                     f"{BASE}.<task> names")
            names = []
            for element in item.value.elts:
                if isinstance(element, ast.Attribute):
                    names.append(element.attr)
                elif isinstance(element, ast.Name):
                    names.append(element.id)
                else:
                    raise CatalogueError(f"{path.name}:{item.lineno}: {node.name}.tasks: "
                                         f"{ast.unparse(element)} is not a task name")
            return tuple(names)
    return None


def _literal(node: ast.ClassDef, attribute: str, default, path: Path):
    for item in node.body:
        if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == attribute for t in item.targets):
            return _constant(item.value, path, f"{node.name}.{attribute}")
    return default


def _constant(node: ast.expr, path: Path, what: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise CatalogueError(f"{path.name}:{node.lineno}: {what} must be a literal value, "
                             f"not {ast.unparse(node)}") from None


def apply(cls, config) -> None:
    """Give a user type its tasks and weight as read above, with config.yaml's weights (ShopUser's
    __init_subclass__). Locust's own collection would hand a subclass that lists some tasks all of its base's."""
    if cls.__dict__.get("abstract"):
        return
    shop = read()
    user = shop.user_types.get(cls.__name__)
    if user is None:
        raise CatalogueError(f"user type {cls.__name__} is not a class of {LOCUSTFILE.name}: define user types "
                             f"there, deriving from {BASE}")
    weights = shop.task_weights(cls.__name__, configured_task_weights(config))
    cls.tasks = [getattr(cls, name) for name, weight in weights.items() for _ in range(weight)]
    cls.weight = config.user_types.get(cls.__name__, user.weight)


def check_locust_arguments(extra: list[str], config) -> None:
    """Locust's own arguments against the suite (run_tests.sh after --, or `locust -f locustfile.py ...`): known
    user classes with a task of weight above 0, known tags, a --host without user info; CatalogueError otherwise."""
    classes, tags, host = _locust_choices(extra)
    if host:
        from .config.urls import normalise_base_url
        try:
            normalise_base_url(host)
        except ValueError as error:
            raise CatalogueError(f"--host {error}") from None
    shop = read()
    unknown = [name for name in classes if name not in shop.user_types]
    if unknown:
        raise CatalogueError(f"unknown user class {unknown[0]!r}: use one of {', '.join(shop.user_types)}")
    bad_tags = [tag for tag in tags if tag not in shop.tags]
    if bad_tags:
        raise CatalogueError(f"unknown tag {bad_tags[0]!r}: use one of {', '.join(shop.tags)}")
    weights = configured_task_weights(config)
    for name in classes:
        if not shop.task_weights(name, weights):
            raise CatalogueError(f"user class {name} has no task with a weight above 0 in scenario_weights/"
                                 "negative_weights: give one of its tasks a weight or choose another class")


def _locust_choices(extra: list[str]) -> tuple[list[str], list[str], str]:
    """User class names, --tags/--exclude-tags values and --host among Locust's arguments, read by Locust's parser."""
    if not extra:
        return [], [], ""
    from locust.argument_parser import get_parser  # only when there is something to read: it costs a second

    options, _unknown = get_parser(default_config_files=[]).parse_known_args(extra)
    tags = [*(options.tags or []), *(options.exclude_tags or [])]
    return list(options.user_classes or []), tags, options.host or ""


def table(config) -> str:
    """The user types and the tasks each runs, with the weights and tags a run uses (`python -m loadsuite.catalogue`)."""
    shop = read()
    weights = configured_task_weights(config)
    lines = [f"{'user type / task':<34}{'weight':>7}  tags"]
    for name, user in shop.user_types.items():
        weight = "on demand" if user.on_demand else str(config.user_types.get(name, user.weight))
        lines.append(f"{name:<34}{weight:>7}")
        for task, task_weight in shop.task_weights(name, weights).items():
            lines.append(f"  {task:<32}{task_weight:>7}  {', '.join(shop.tasks[task].tags)}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from .config import ConfigError, load_config

    try:
        print(table(load_config(sys.argv[1] if len(sys.argv) > 1 else None)))
    except (ConfigError, CatalogueError) as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
