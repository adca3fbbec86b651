"""The Docker image and compose file: hadolint-clean, copying every file the suite needs, commands that run_tests.sh accepts."""
from __future__ import annotations

import ast
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
RUN_TESTS = ROOT / "run_tests.sh"
HADOLINT = Path(sys.executable).parent / "hadolint"
IMAGE_ENTRYPOINT = ["./run_tests.sh"]
# Environment variables the suite's config loader reads (loadsuite/config/loading.py).
CONFIG_ENV = set(re.findall(r'env\.get\("(\w+)"\)', (ROOT / "loadsuite/config/loading.py").read_text()))
MONITORING_COMMAND = "CONFIG_PATH=grafana/config.monitoring.yaml docker compose --profile monitoring up --build"


# Parsing -------------------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def exec_form(arguments: str) -> list[str] | None:
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _glob_regex(pattern: str) -> re.Pattern:
    """Docker's (Go filepath.Match plus **) pattern as a regex over slash-separated relative paths."""
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


class DockerIgnore:
    """The .dockerignore rules: the last pattern matching a path (or one of its folders) decides."""

    def __init__(self, text: str) -> None:
        self.rules = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            self.rules.append((include, _glob_regex(line[1:] if include else line)))

    def ignored(self, relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        verdict = False
        for include, regex in self.rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                verdict = not include
        return verdict


def copied_files() -> set[str]:
    """Every context file the Dockerfile's COPY instructions put into the image (after .dockerignore)."""
    ignore = DockerIgnore(DOCKERIGNORE.read_text())
    files: set[str] = set()
    for instruction, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction not in ("COPY", "ADD"):
            continue
        words = exec_form(arguments) or shlex.split(arguments)
        assert not any(word.startswith("--from") for word in words), "no multi-stage copies expected"
        sources = [word for word in words if not word.startswith("--")][:-1]
        for source in sources:
            matches = sorted(ROOT.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else [ROOT / source]
            assert matches and all(m.exists() for m in matches), f"COPY source {source} does not exist"
            for match in matches:
                candidates = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
                for path in candidates:
                    relative = path.relative_to(ROOT).as_posix()
                    if not ignore.ignored(relative):
                        files.add(relative)
    return files


def _local_module_files(name: str) -> list[Path]:
    if (ROOT / f"{name}.py").is_file():
        return [ROOT / f"{name}.py"]
    package = ROOT / name
    if (package / "__init__.py").is_file():
        return [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return []


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def needed_files() -> set[str]:
    """run_tests.sh, config.yaml, requirements.txt and every local module reachable from what run_tests.sh runs."""
    script = RUN_TESTS.read_text()
    entry = {m[:-3] for m in re.findall(r"\b([A-Za-z_]\w*\.py)\b", script) if (ROOT / m).is_file()}
    entry |= {m for m in re.findall(r"-m\s+([A-Za-z_]\w*)", script) if _local_module_files(m)}
    assert {"locustfile", "product_service", "analyze_results", "loadsuite"} <= entry, entry
    needed = {"run_tests.sh", "config.yaml", "requirements.txt", "requirements.lock"}
    todo, seen = list(entry), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for path in _local_module_files(name):
            needed.add(path.relative_to(ROOT).as_posix())
            if path.suffix == ".py":
                todo.extend(_imported_names(path) - seen)
    return needed


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def substitute(value: str) -> str:
    """Compose variable substitution with nothing set: ${VAR:-default} becomes its default."""
    def replace(match):
        assert match.group(2) is not None, f"{match.group(0)} has no default: compose would pass an empty string"
        return match.group(2)
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", replace, str(value))


def run_tests_interface() -> tuple[dict[str, list[str]], set[str]]:
    """Modes with their positional arguments and the options, from run_tests.sh's own parser."""
    from loadsuite.cli.run_args import POSITIONALS, build_parser

    modes = {mode: [name if name == "MASTER_HOST" else f"[{name}]" for name in names]
             for mode, names in POSITIONALS.items()}
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["headless"]
    options = {option for action in sub._actions for option in action.option_strings if option.startswith("--")}
    script = RUN_TESTS.read_text()
    for mode in modes:  # every mode must be a real branch of the script
        branch = rf"^\s+(?:[a-z]+\|)*{mode}(?:\|[a-z]+)*\)|\"\$MODE\" = \"{mode}\""
        assert re.search(branch, script, re.M), f"mode {mode} has no branch in run_tests.sh"
    return modes, options


# The Dockerfile ----------------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install locust\nCMD ./run_tests.sh ui\n")
    result = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_image_is_slim_pinned_non_root_and_runs_the_ui_by_default():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    kinds = [kind for kind, _ in instructions]
    base = instructions[0][1]
    assert kinds[0] == "FROM" and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    user = [args for kind, args in instructions if kind == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert kinds.index("USER") > max(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "pip" in a)
    assert ("EXPOSE", "8089") in instructions
    assert exec_form(dict(instructions)["ENTRYPOINT"]) == IMAGE_ENTRYPOINT
    assert exec_form(dict(instructions)["CMD"]) == ["ui"]
    assert "HEALTHCHECK" in kinds
    assert ("WORKDIR", "/app") in instructions
    assert exec_form(dict(instructions)["VOLUME"]) == ["/app/results"]
    env = " ".join(args for kind, args in instructions if kind == "ENV")
    for setting in ("USE_SYSTEM_PYTHON=1", "WEB_HOST=0.0.0.0", "RESULTS_ROOT=/app/results"):
        assert setting in env.split(), setting
    install = next(args for kind, args in instructions if kind == "RUN" and "pip install" in args)
    assert "-r requirements.txt" in install and "-c requirements.lock" in install and "--no-cache-dir" in install


def test_image_copies_every_file_needed_at_run_time_and_nothing_else():
    needed, copied = needed_files(), copied_files()
    assert not needed - copied, f"needed at run time but not copied: {sorted(needed - copied)}"
    assert not copied - needed, f"copied but never used at run time: {sorted(copied - needed)}"
    assert "product_service/catalog.json" in copied
    assert not any(path.startswith(("tests/", "bench/", ".venv/", "results/")) for path in copied)


def test_dockerignore_keeps_secrets_and_bulk_out_of_the_build_context():
    ignore = DockerIgnore(DOCKERIGNORE.read_text())
    for path in (".venv/bin/python", ".git/config", "results/latest/summary.json", "tests/conftest.py",
                 "product_service/__pycache__/app.cpython-311.pyc", ".env", "bench/out/x.json", "service.db"):
        assert ignore.ignored(path), path
    for path in needed_files():
        assert not ignore.ignored(path), path


def _run_healthcheck(tmp_path, cmdline: list[str], port: int) -> int:
    command = exec_form(dict(dockerfile_instructions(DOCKERFILE.read_text()))["HEALTHCHECK"].split("CMD", 1)[1].strip())
    assert command[:2] == ["python", "-c"]
    fake = tmp_path / "cmdline"
    fake.write_bytes(b"\0".join(word.encode() for word in cmdline) + b"\0")
    code = command[2].replace("/proc/1/cmdline", str(fake))
    env = {**os.environ, "WEB_PORT": str(port)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_fails_in_ui_mode_until_the_page_answers(tmp_path):
    port = free_port()
    ui = ["bash", "./run_tests.sh", "ui"]
    assert _run_healthcheck(tmp_path, ui, port) != 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _run_healthcheck(tmp_path, ui, port) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert _run_healthcheck(tmp_path, ["bash", "./run_tests.sh", "headless", "10", "300"], port) == 0


@pytest.mark.e2e
def test_the_copied_files_alone_run_a_headless_test_with_analysis(tmp_path):
    app = tmp_path / "app"
    for relative in copied_files():
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, app / relative)
    env = {**os.environ, "USE_SYSTEM_PYTHON": "1", "PYTHON": sys.executable, "WEB_HOST": "0.0.0.0",
           "RESULTS_ROOT": str(app / "results"), "MPLBACKEND": "Agg", "STOP_TIMEOUT": "3"}
    env.pop("CONFIG_PATH", None)
    result = subprocess.run(["./run_tests.sh", "headless", "3", "5"], cwd=app, env=env, capture_output=True,
                            text=True, timeout=180, start_new_session=True)
    run = app / "results" / "latest"
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["totals"]["requests"] > 0 and summary["verdict"]["passed"] is True
    assert (run / "summary.md").is_file() and (run / "report.html").is_file()
    assert not (app / ".venv").exists()  # USE_SYSTEM_PYTHON: no virtualenv built inside the image


# docker-compose.yml ----------------------------------------------------------------------------------

def test_compose_has_service_master_scalable_workers_and_optional_metrics():
    services = compose()["services"]
    assert {"product-service", "master", "worker"} <= set(services)
    for name in ("product-service", "master", "worker"):
        assert services[name].get("build") == "." and services[name]["image"] == services["master"]["image"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N` needs both absent
    assert services["master"]["environment"]["MASTER_BIND_HOST"] == "0.0.0.0"
    assert int(substitute(services["master"]["environment"]["EXPECT_WORKERS"])) == worker["deploy"]["replicas"]
    assert "./results:/app/results" in services["master"]["volumes"]
    assert services["master"]["depends_on"]["product-service"]["condition"] == "service_healthy"
    assert "healthcheck" in services["product-service"]
    metrics = [s for s in services.values() if "victoria-metrics" in s.get("image", "")]
    assert metrics and all(s.get("profiles") for s in metrics)
    for service in services.values():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{mapping} would publish on every interface"


def test_compose_reference_service_command_is_accepted_by_its_cli():
    from product_service.cli import build_parser

    service = compose()["services"]["product-service"]
    assert service["entrypoint"] == ["python", "-m", "product_service"]
    options = build_parser().parse_args([substitute(word) for word in service["command"]])
    assert options.host == "0.0.0.0" and options.reset and options.port == 8082


def test_compose_commands_match_run_tests_interface():
    modes, documented_options = run_tests_interface()
    services = compose()["services"]
    script = RUN_TESTS.read_text()
    checked = 0
    for name, service in services.items():
        if service.get("image") != services["master"]["image"] or "entrypoint" in service:
            continue
        command = [substitute(word) for word in service["command"]]
        mode, rest = command[0], command[1:]
        assert mode in modes, f"{name}: run_tests.sh has no mode {mode!r}"
        positional = []
        while rest and not rest[0].startswith("--"):
            positional.append(rest.pop(0))
        for word in rest:
            if word == "--":
                break
            if word.startswith("--"):
                assert word in documented_options, f"{name}: run_tests.sh has no option {word}"
        spec = modes[mode]
        assert len(positional) <= len(spec), f"{name}: too many arguments for {mode}: {positional}"
        required = [arg for arg in spec if not arg.startswith("[")]
        assert len(positional) >= len(required), f"{name}: {mode} needs {required}"
        for arg, value in zip((a.strip("[]") for a in spec), positional):
            if arg in ("USERS", "DURATION_S", "WORKERS"):
                assert value.isdigit() and int(value) > 0, f"{name}: {arg} must be a positive number, got {value}"
            elif arg == "HOST":
                host, port = re.fullmatch(r"https?://([\w.-]+):(\d+)/?", value).groups()
                assert host in services, f"{name}: {host} is not a compose service"
                assert port in services[host]["command"], f"{name}: {host} does not listen on {port}"
            elif arg == "MASTER_HOST":
                assert value in services, f"{name}: {value} is not a compose service"
        for variable in service.get("environment", {}):
            assert re.search(rf"\${{{variable}\b", script) or variable in CONFIG_ENV, \
                f"{name}: neither run_tests.sh nor the config loader reads {variable}"
        checked += 1
    assert checked >= 2
    master_port = services["master"]["environment"]["MASTER_PORT"]
    assert services["worker"]["environment"]["MASTER_PORT"] == master_port


def _image_is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and re.fullmatch(r"v?\d+\.\d+\.\d+", tag) is not None


def test_compose_monitoring_profile_streams_to_its_store_and_provisions_the_dashboards():
    from loadsuite.config import load_config

    services = compose()["services"]
    profiled = {name for name, service in services.items() if "monitoring" in service.get("profiles", [])}
    assert profiled == {"victoria-metrics", "grafana"}
    for name in profiled:
        assert _image_is_pinned(services[name]["image"]), f"{name}: image {services[name]['image']} is not pinned"
    # The documented command: CONFIG_PATH names a mounted file that turns monitoring on towards the store.
    assert MONITORING_COMMAND in COMPOSE.read_text()
    assert MONITORING_COMMAND in (ROOT / "docs" / "monitoring.md").read_text()
    config_path = MONITORING_COMMAND.split()[0].split("=", 1)[1]
    master = services["master"]
    assert substitute(master["environment"]["CONFIG_PATH"]) == "config.yaml"  # off unless asked for
    assert f"./{config_path}:/app/{config_path}:ro" in master["volumes"]
    influx = load_config(ROOT / config_path, env={}).monitoring.influxdb
    store = re.fullmatch(r"http://([\w.-]+):(\d+)", influx.url)
    assert influx.enabled and store and store.group(1) == "victoria-metrics"
    assert f"-httpListenAddr=:{store.group(2)}" in services["victoria-metrics"]["command"]
    # Grafana: provisioning and dashboards mounted from the repository, read-only, where the files point.
    grafana = services["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, inside, mode = volume.split(":")
        assert mode == "ro" and (ROOT / source).exists(), volume
        mounts[inside] = ROOT / source
    provisioning = mounts["/etc/grafana/provisioning"]
    provider = yaml.safe_load((provisioning / "dashboards" / "locust.yaml").read_text())["providers"][0]
    dashboards_dir = mounts[provider["options"]["path"]]
    boards = sorted(p.name for p in dashboards_dir.glob("*.json"))
    assert boards == ["locust-influxdb2-flux.json", "locust-victoriametrics.json"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/") and home.rsplit("/", 1)[1] in boards
    sources = yaml.safe_load((provisioning / "datasources" / "victoriametrics.yaml").read_text())["datasources"]
    assert [(s["type"], s["url"]) for s in sources] == [("prometheus", influx.url)]
    assert sources[0]["jsonData"]["timeInterval"] == f"{influx.flush_interval_seconds:g}s"
    assert "victoria-metrics" in grafana["depends_on"]
    assert not (ROOT / "grafana" / "__init__.py").exists()  # a folder of files, never a Python package
