"""Load and validate config.yaml into a typed, frozen object before any traffic is sent.

Every key the suite reads is declared here once; `config.yaml` documents each with a comment.
Environment overrides: CONFIG_PATH (which file), PRODUCT_SERVICE_URL (service.base_url),
LOAD_SHAPE (load_shape.name), SERVICE_CLIENT (service.client), THRESHOLDS ("p95_ms=500,Buy_Product.p99_ms=900"),
INFLUXDB_TOKEN (monitoring token, never stored in a file).
Run `python config_loader.py [PATH]` to check a file: exit 0 when valid, 2 with one line when not.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.yaml"

TASK_NAMES = (
    "browse_all_products", "get_products_by_category", "get_product_details", "buy_product",
    "update_stock", "hit_invalid_path", "health_check", "edge_case",
)
NEGATIVE_TASK_NAMES = (
    "details_unknown_product", "buy_unknown_product", "buy_beyond_stock",
    "invalid_buy_payload", "invalid_stock_payload", "missing_category",
)
USER_TYPES = ("ProductServiceUser", "BrowserUser", "ShopperUser", "AdminUser")
SHAPE_NAMES = ("staged", "spike", "step")


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ServiceConfig(_Section):
    base_url: str = "http://127.0.0.1:8082"
    request_timeout_seconds: float = Field(10.0, gt=0, le=600)
    client: Literal["fast", "requests"] = "fast"

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class TestDataConfig(_Section):
    __test__ = False  # not a pytest class
    non_existent_product_name: str = Field("ProductThatWillNeverExist123", min_length=1)
    categories: tuple[str, ...] = (
        "Electronics", "Apparel", "Books", "Kitchenware", "Furniture", "NonExistentCategory",
    )
    empty_categories: tuple[str, ...] = ("NonExistentCategory",)
    stock_update_min: int = Field(1, ge=1)
    stock_update_max: int = Field(100, ge=1)
    max_buy_quantity: int = Field(3, ge=1)

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one category")
        if any(not c for c in value):
            raise ValueError("must not contain an empty name")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> "TestDataConfig":
        if self.stock_update_min > self.stock_update_max:
            raise ValueError("stock_update_min must not exceed stock_update_max")
        return self


def _weights(names: tuple[str, ...], defaults: dict[str, int]):
    """A frozen model with one non-negative integer weight per task name."""
    fields = {name: (int, Field(defaults.get(name, 1), ge=0, strict=True)) for name in names}
    from pydantic import create_model
    return create_model("Weights", __base__=_Section, **fields)


ScenarioWeights = _weights(TASK_NAMES, {
    "browse_all_products": 10, "get_products_by_category": 8, "get_product_details": 10,
    "buy_product": 7, "update_stock": 3, "hit_invalid_path": 1, "health_check": 2, "edge_case": 1,
})
NegativeWeights = _weights(NEGATIVE_TASK_NAMES, {})
UserTypeWeights = _weights(USER_TYPES, {
    "ProductServiceUser": 4, "BrowserUser": 3, "ShopperUser": 2, "AdminUser": 1,
})


class WaitTimeConfig(_Section):
    min_seconds: float = Field(0.5, ge=0)
    max_seconds: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> "WaitTimeConfig":
        if self.min_seconds > self.max_seconds:
            raise ValueError("min_seconds must not exceed max_seconds")
        return self


class CacheConfig(_Section):
    max_products: int = Field(1000, ge=1)


class Stage(_Section):
    duration: float = Field(gt=0, description="seconds this stage lasts")
    users: int = Field(ge=0)
    spawn_rate: float = Field(gt=0)
    user_classes: Optional[tuple[str, ...]] = None
    target_rps: Optional[float] = Field(None, gt=0)


class StagedShape(_Section):
    stages: tuple[Stage, ...] = (
        Stage(duration=30, users=10, spawn_rate=0.34),
        Stage(duration=60, users=10, spawn_rate=2),
        Stage(duration=20, users=0, spawn_rate=0.5),
    )

    @field_validator("stages")
    @classmethod
    def _non_empty(cls, value):
        if not value:
            raise ValueError("must list at least one stage")
        return value


class SpikeShape(_Section):
    baseline_users: int = Field(5, ge=0)
    spike_users: int = Field(50, ge=0)
    baseline_seconds: float = Field(30, gt=0)
    spike_seconds: float = Field(20, gt=0)
    recovery_seconds: float = Field(30, gt=0)
    spawn_rate: float = Field(25, gt=0)


class StepShape(_Section):
    step_users: int = Field(5, ge=1)
    step_seconds: float = Field(20, gt=0)
    max_users: int = Field(50, ge=1)
    spawn_rate: float = Field(5, gt=0)


class LoadShapeConfig(_Section):
    name: Optional[Literal["staged", "spike", "step"]] = None
    target_rps: Optional[float] = Field(None, gt=0)
    staged: StagedShape = StagedShape()
    spike: SpikeShape = SpikeShape()
    step: StepShape = StepShape()


class EndpointThresholds(_Section):
    error_rate: Optional[float] = Field(None, ge=0, le=1)
    p95_ms: Optional[float] = Field(None, gt=0)
    p99_ms: Optional[float] = Field(None, gt=0)
    avg_ms: Optional[float] = Field(None, gt=0)
    min_rps: Optional[float] = Field(None, ge=0)


class ThresholdsConfig(EndpointThresholds):
    error_rate: Optional[float] = Field(0.01, ge=0, le=1)
    p95_ms: Optional[float] = Field(1000, gt=0)
    p99_ms: Optional[float] = Field(2000, gt=0)
    per_request: dict[str, EndpointThresholds] = {}
    consistency: bool = True


class InfluxConfig(_Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = "loadtest"
    bucket: str = "locust"
    measurement_prefix: str = Field("locust", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    flush_interval_seconds: float = Field(5.0, gt=0)
    batch_size: int = Field(500, ge=1)
    max_buffer_points: int = Field(10000, ge=1)
    write_timeout_seconds: float = Field(2.0, gt=0)
    mode: Literal["aggregate", "raw"] = "aggregate"
    test_name: str = "product-service"


class MonitoringConfig(_Section):
    influxdb: InfluxConfig = InfluxConfig()


class OracleConfig(_Section):
    enabled: bool = True
    max_records: int = Field(800_000, ge=100)
    clock_skew_ms: float = Field(50.0, ge=0)


class ContentionConfig(_Section):
    product: Optional[str] = None
    stock: int = Field(200, ge=1)
    quantity: int = Field(1, ge=1)


class SuiteConfig(_Section):
    service: ServiceConfig = ServiceConfig()
    test_data: TestDataConfig = TestDataConfig()
    scenario_weights: ScenarioWeights = ScenarioWeights()
    negative_weights: NegativeWeights = NegativeWeights()
    user_types: UserTypeWeights = UserTypeWeights()
    wait_time: WaitTimeConfig = WaitTimeConfig()
    cache: CacheConfig = CacheConfig()
    load_shape: LoadShapeConfig = LoadShapeConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    oracle: OracleConfig = OracleConfig()
    contention: ContentionConfig = ContentionConfig()

    @model_validator(mode="after")
    def _some_work(self) -> "SuiteConfig":
        if sum(self.scenario_weights.model_dump().values()) + sum(self.negative_weights.model_dump().values()) == 0:
            raise ValueError("scenario_weights and negative_weights are all zero: give at least one task a weight")
        if sum(self.user_types.model_dump().values()) == 0:
            raise ValueError("user_types weights are all zero: give at least one user type a weight")
        return self


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}': remove it or check its spelling against config.yaml"
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
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


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> SuiteConfig:
    """Read the config file (CONFIG_PATH or the default) and apply environment overrides.

    A file named explicitly (argument or CONFIG_PATH) must exist; a missing default file means defaults.
    """
    env = os.environ if env is None else env
    explicit = path or env.get("CONFIG_PATH") or None
    file = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    data: object = {}
    if file.exists() or explicit:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{file}: config file not found: check the path or unset CONFIG_PATH") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{file}: cannot read config file ({error.__class__.__name__}): fix its permissions or encoding") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "invalid YAML"
            raise ConfigError(f"{file}: YAML syntax error{where}: {problem}") from None
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
        if shape not in ("", "none", *SHAPE_NAMES):
            raise ConfigError(f"LOAD_SHAPE: unknown shape {shape!r}: use one of {', '.join(SHAPE_NAMES)} or none")
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
        try:
            parsed: object = None if value.lower() in ("null", "none", "off") else yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"THRESHOLDS: {key}: {value!r} is not a number or true/false") from None
        request, dot, metric = key.rpartition(".")
        if dot:
            thresholds["per_request"].setdefault(request, {})[metric] = parsed
        else:
            thresholds[metric] = parsed


def influxdb_token(env=None) -> str | None:
    """The InfluxDB token, from INFLUXDB_TOKEN only (never from a file in the repository)."""
    env = os.environ if env is None else env
    return env.get("INFLUXDB_TOKEN") or None


@lru_cache(maxsize=1)
def get_config() -> SuiteConfig:
    """The run's configuration, loaded once per process."""
    return load_config()


def get_config_or_exit() -> SuiteConfig:
    """The run's configuration, or a one-line error on stderr and exit code 2 (before any traffic)."""
    try:
        return get_config()
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str]) -> int:
    try:
        config = load_config(argv[0] if argv else None)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    print(f"config ok: target {config.service.base_url}, shape {config.load_shape.name or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
