"""The layout's promises: thin front doors, small modules, no import cycle, listeners in one place, names once."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

FRONT_DOORS = {"locustfile.py", "config_loader.py", "shared_data.py", "validators.py", "custom_load_shape.py",
               "event_hooks.py", "monitoring.py", "test_data.py", "analyze_results.py"}
PACKAGE = ROOT / "loadsuite"
MAX_LINES = 430  # "about 400": a module past this has more than one concern


def _suite_modules() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / name for name in FRONT_DOORS)])


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Local modules this file imports at module level or inside functions (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    local = {_module_name(p) for p in _suite_modules()}
    return {name for name in found if name in local} - {_module_name(path)}


def test_only_the_front_doors_and_no_other_module_sit_at_the_top_level():
    top = {path.name for path in ROOT.glob("*.py")}
    assert top == FRONT_DOORS, f"move {sorted(top - FRONT_DOORS)} into loadsuite/ (docs/architecture.md)"


def test_no_module_outside_tests_is_over_about_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in [*_suite_modules(), *(ROOT / "product_service").glob("*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def test_there_is_no_import_cycle():
    graph = {_module_name(p): _imports(p) for p in _suite_modules()}
    # A package's __init__ re-exporting its own modules is not a cycle through them.
    for name in graph:
        graph[name] = {dep for dep in graph[name] if not dep.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep):] + [dep] if dep in trail else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_package_never_imports_a_front_door_except_the_monitoring_api():
    doors = {name[:-3] for name in FRONT_DOORS}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & doors) for p in PACKAGE.rglob("*.py")
                 if _imports(p) & doors}
    assert not offenders, f"the machinery must not depend on the files in front of it: {offenders}"


def test_listeners_are_attached_only_in_event_hooks():
    attaching = re.compile(r"\.add_listener\(|@events\.\w+\.add_listener")
    places = [str(p.relative_to(ROOT)) for p in _suite_modules() if attaching.search(p.read_text(encoding="utf-8"))]
    assert places == ["event_hooks.py", "loadsuite/runtime/attach.py"], places


def _every_python_file() -> list[Path]:
    """The suite, the reference service, the benchmarks and the tests: the rules below bind them all."""
    return sorted({*_suite_modules(), *(ROOT / "bench").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
                   *(ROOT / "product_service").glob("*.py")})


def test_task_and_user_type_names_are_defined_once():
    """A task is defined in locustfile.py (def NAME) and weighed in config.yaml; a user type is a class there.
    Everything else reads them from loadsuite.catalogue: no file repeats a list of them (three or more names
    within four lines; a test or a bench may name the one or two it is about)."""
    from loadsuite import catalogue

    shop = catalogue.read()
    quoted = re.compile(r"[\"'](" + "|".join(map(re.escape, [*shop.tasks, *shop.user_types])) + r")[\"']")
    offenders = {}
    # bench/common.py writes out each task's requests for the bare benchmark scripts (the same requests without
    # the suite's checks): that is its job, and bench/run.py compares the two side by side.
    for path in _every_python_file():
        if path in (ROOT / "locustfile.py", ROOT / "bench" / "common.py"):
            continue
        lines = [set(quoted.findall(re.sub(r"@tag\([^)]*\)", "", line)))  # a tag may share a task's name
                 for line in path.read_text(encoding="utf-8").splitlines()]
        for start in range(len(lines)):
            near = set().union(*lines[start:start + 4])
            if len(near & set(shop.tasks)) >= 3 or len(near & set(shop.user_types)) >= 3:
                offenders[f"{path.relative_to(ROOT)}:{start + 1}"] = sorted(near)
                break
    assert not offenders, f"these files list task or user type names: read them from loadsuite.catalogue: {offenders}"


def test_the_catalogue_reads_exactly_the_classes_locust_loads():
    """catalogue.py reads locustfile.py's source; Locust imports it: both see the same user types, tasks, weights
    and tags (with the shipped config.yaml, which names every weight its decorator already has)."""
    import locustfile
    from locust import User

    from loadsuite import catalogue

    shop = catalogue.read()
    loaded = {name: cls for name, cls in vars(locustfile).items()
              if isinstance(cls, type) and issubclass(cls, User) and not cls.__dict__.get("abstract")}
    assert set(loaded) == set(shop.user_types)
    for name, cls in loaded.items():
        user = shop.user_types[name]
        assert cls.weight == locustfile.CONFIG.user_types.get(name, user.weight)
        counts = {task.__name__: cls.tasks.count(task) for task in cls.tasks}
        assert counts == shop.task_weights(name, catalogue.configured_task_weights(locustfile.CONFIG))
        for task in set(cls.tasks):
            assert tuple(sorted(getattr(task, "locust_tag_set", ()))) == tuple(sorted(shop.tasks[task.__name__].tags))
    assert getattr(loaded["ContentionUser"], "on_demand", False) and shop.user_types["ContentionUser"].on_demand
