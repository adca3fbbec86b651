"""Load config.yaml (or CONFIG_PATH) into a SuiteConfig, apply environment overrides, fail with one line.

Environment overrides: CONFIG_PATH (which file), PRODUCT_SERVICE_URL (service.base_url),
LOAD_SHAPE (load_shape.name), SERVICE_CLIENT (service.client), THRESHOLDS ("p95_ms=500,Buy_Product.p99_ms=900"),
INFLUXDB_TOKEN (monitoring token, never stored in a file).
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..names import SHAPES
from .schema import ConfigError, SuiteConfig
from .urls import redact

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config.yaml"
OFF_WORDS = ("off", "false", "none", "null")  # THRESHOLDS=KEY=off turns a limit off (see config.yaml)


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[object, yaml.Node] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {first}): keep one of them", key_node.start_mark)
        if isinstance(key, (str, int, float, bool)):
            seen[key] = key_node
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def strict_yaml(text: str) -> object:
    """Parse YAML with the safe loader, refusing duplicate keys; yaml.YAMLError on any problem."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}': remove it or check its spelling against config.yaml"
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    if isinstance(got, str):
        got = redact(got)  # a URL's password is never printed
    seen = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{source}: {key}: {message}{seen}"


def parse_config(data: object, source: str = "config") -> SuiteConfig:
    """Validate a parsed YAML document; raise ConfigError with one line on any problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, not {type(data).__name__}")
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


MAX_CONFIG_BYTES = 1024 * 1024  # config.yaml is about 10 KB; a larger file is the wrong file, not a config


def _read_bounded(file: Path) -> str:
    """The file's text, read only up to MAX_CONFIG_BYTES (a 50 MB file took 43 s to parse, /dev/zero never ends)."""
    try:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = handle.read(MAX_CONFIG_BYTES + 1) if size <= MAX_CONFIG_BYTES else b""
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found: check the path or unset CONFIG_PATH") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a config file: give the path of a YAML file") from None
    except OSError as error:
        raise ConfigError(f"{file}: cannot read config file ({error.strerror or error.__class__.__name__}): "
                          "fix its permissions or the path") from None
    if size > MAX_CONFIG_BYTES or len(raw) > MAX_CONFIG_BYTES:
        shown = f"{size / 2**20:.1f} MiB" if size > MAX_CONFIG_BYTES else "larger than that"
        raise ConfigError(f"{file}: the file is {shown}; a config file may have at most "
                          f"{MAX_CONFIG_BYTES // 2**20} MiB (config.yaml has about 10 KB): is it the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file}: cannot read config file: not UTF-8 text (at byte offset {error.start}): save it as "
                          "UTF-8") from None


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                notes: list[str] | None = None) -> SuiteConfig:
    """Read the config file (CONFIG_PATH or the default) and apply environment overrides.

    A file named explicitly (argument or CONFIG_PATH) must exist; a missing default file means defaults. What the
    user should know but is no error (an empty file: all defaults) is appended to `notes`, one line each.
    """
    env = os.environ if env is None else env
    explicit = path or env.get("CONFIG_PATH") or None
    file = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    data: object = {}
    if file.exists() or explicit:
        text = _read_bounded(file)
        try:
            data = strict_yaml(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "invalid YAML"
            kind = "YAML error" if isinstance(error, yaml.constructor.ConstructorError) else "YAML syntax error"
            raise ConfigError(f"{file}: {kind}{where}: {problem}") from None
        if data is None and notes is not None:
            notes.append(f"{file} is empty (no setting, only comments or nothing): every setting takes its default "
                         "(config.yaml documents them)")
    config = parse_config(data, str(file))
    return apply_env_overrides(config, env, str(file))


def apply_env_overrides(config: SuiteConfig, env, source: str = "environment") -> SuiteConfig:
    """PRODUCT_SERVICE_URL and LOAD_SHAPE win over the file (validated the same way)."""
    data = config.model_dump()
    if env.get("PRODUCT_SERVICE_URL"):
        data["service"]["base_url"] = env["PRODUCT_SERVICE_URL"]
    if env.get("SERVICE_CLIENT"):
        data["service"]["client"] = env["SERVICE_CLIENT"]
    shape = env.get("LOAD_SHAPE")
    if shape is not None:
        if shape not in ("", "none", *SHAPES):
            raise ConfigError(f"LOAD_SHAPE: unknown shape {shape!r}: use one of {', '.join(SHAPES)} or none")
        data["load_shape"]["name"] = None if shape in ("", "none") else shape
    if env.get("THRESHOLDS"):
        _apply_threshold_overrides(data["thresholds"], env["THRESHOLDS"])
    return parse_config(data, f"{source} (with environment overrides)")


def _apply_threshold_overrides(thresholds: dict, spec: str) -> None:
    """Apply "p95_ms=500,Buy_Product.p99_ms=900,consistency=false" onto the thresholds section."""
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"THRESHOLDS: {item!r} is not KEY=VALUE: write e.g. p95_ms=500 or Buy_Product.p99_ms=900")
        request, dot, metric = key.rpartition(".")
        try:
            parsed: object = strict_yaml(value)
        except yaml.YAMLError:
            raise ConfigError(f"THRESHOLDS: {key}: {value!r} is not a number or true/false") from None
        if value.strip().lower() in OFF_WORDS:  # "error_rate=false" means no limit, not the strictest one
            parsed = False if metric == "consistency" else None
        elif metric == "consistency" and value.strip().lower() in ("on", "true"):
            parsed = True
        if dot:
            thresholds["per_request"].setdefault(request, {})[metric] = parsed
        else:
            thresholds[metric] = parsed


def influxdb_token(env=None) -> str | None:
    """The InfluxDB token, from INFLUXDB_TOKEN only (never from a file in the repository)."""
    env = os.environ if env is None else env
    return env.get("INFLUXDB_TOKEN") or None


@lru_cache(maxsize=1)
def _loaded() -> tuple[SuiteConfig, tuple[str, ...]]:
    notes: list[str] = []
    return load_config(notes=notes), tuple(notes)


def get_config() -> SuiteConfig:
    """The run's configuration, read and parsed once per process."""
    return _loaded()[0]


def get_config_or_exit() -> SuiteConfig:
    """The run's configuration, or a one-line error on stderr and exit code 2 (before any traffic). Its notes go to
    stderr, unless run_tests.sh already said them (it checks the same file first)."""
    try:
        config, notes = _loaded()
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if os.environ.get("LOADSUITE_SUPERVISED") != "1":
        for note in notes:
            print(f"config note: {note}", file=sys.stderr)
    return config
