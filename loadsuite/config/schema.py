"""Every key the suite reads, declared once as a frozen pydantic model; config.yaml documents each with a comment."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .. import catalogue
from ..names import CLIENTS, SHAPES
from .urls import normalise_base_url

# Upper bounds (docs/reliability.md lists them; run_tests.sh's arguments use the same): far above what one
# machine drives, low enough that a typo (100,000,000 users) is refused before any traffic, not a MemoryError.
MAX_USERS = 100_000
MAX_SPAWN_RATE = 10_000.0
MAX_SECONDS = 7 * 24 * 3600  # one stage, one run, one think time
MAX_RPS = 1_000_000.0

class ConfigError(Exception):
    """A configuration problem, worded as one line that names the key and the fix."""


class _Section(BaseModel):
    """Strict where YAML is loose: no unknown keys, no inf/nan, and true/false never stand in for a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError("true/false is not a value here: give a number (or null to turn a limit off)")
        return value


class ServiceConfig(_Section):
    base_url: str = "http://127.0.0.1:8082"
    request_timeout_seconds: float = Field(10.0, gt=0, le=600)
    max_response_mib: float = Field(16.0, gt=0, le=1024)
    client: Literal[CLIENTS] = "fast"
    ready_timeout_seconds: float = Field(10.0, gt=0, le=3600)  # the start-up wait for GET /health (cli/health.py)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return normalise_base_url(value)  # the same rules as run_tests.sh's HOST; user info refused


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


Weight = Annotated[int, Field(ge=0, strict=True)]


def _known(section: str, names: dict[str, int], known: tuple[str, ...], what: str) -> dict[str, int]:
    """A weights section names only tasks (or user types) locustfile.py defines (catalogue.py reads them)."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}: locustfile.py defines {', '.join(known)}")
    return names


class WaitTimeConfig(_Section):
    min_seconds: float = Field(0.5, ge=0, le=MAX_SECONDS)
    max_seconds: float = Field(2.0, ge=0, le=MAX_SECONDS)

    @model_validator(mode="after")
    def _order(self) -> "WaitTimeConfig":
        if self.min_seconds > self.max_seconds:
            raise ValueError("min_seconds must not exceed max_seconds")
        return self


class CacheConfig(_Section):
    max_products: int = Field(1000, ge=1)


class Stage(_Section):
    duration: float = Field(gt=0, le=MAX_SECONDS, description="seconds this stage lasts")
    users: int = Field(ge=0, le=MAX_USERS)
    spawn_rate: float = Field(gt=0, le=MAX_SPAWN_RATE)
    user_classes: Optional[tuple[str, ...]] = None
    target_rps: Optional[float] = Field(None, gt=0, le=MAX_RPS)


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
    baseline_users: int = Field(5, ge=0, le=MAX_USERS)
    spike_users: int = Field(50, ge=0, le=MAX_USERS)
    baseline_seconds: float = Field(30, gt=0, le=MAX_SECONDS)
    spike_seconds: float = Field(20, gt=0, le=MAX_SECONDS)
    recovery_seconds: float = Field(30, gt=0, le=MAX_SECONDS)
    spawn_rate: float = Field(25, gt=0, le=MAX_SPAWN_RATE)


class StepShape(_Section):
    step_users: int = Field(5, ge=1, le=MAX_USERS)
    step_seconds: float = Field(20, gt=0, le=MAX_SECONDS)
    max_users: int = Field(50, ge=1, le=MAX_USERS)
    spawn_rate: float = Field(5, gt=0, le=MAX_SPAWN_RATE)


class LoadShapeConfig(_Section):
    name: Optional[Literal[SHAPES]] = None
    target_rps: Optional[float] = Field(None, gt=0, le=MAX_RPS)
    max_in_flight: int = Field(1000, ge=1, le=10_000)
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
    status_codes: bool = False


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


class PopularityConfig(_Section):
    skew: float = Field(1.0, ge=0, le=5)


class FlashSaleConfig(_Section):
    enabled: bool = True
    start_seconds: float = Field(10.0, ge=0)
    duration_seconds: float = Field(10.0, gt=0)
    stock: int = Field(1000, ge=1)

    def cannot_open_within(self, planned_s: float | None) -> str | None:
        """Why this sale cannot open in a run planned to last planned_s seconds (None: it can, or the length is
        unknown); run_tests.sh says it before the run, the verdict names it after (scenarios/flash_sale.py)."""
        if not self.enabled or planned_s is None or planned_s > self.start_seconds:
            return None
        return (f"the flash sale opens {self.start_seconds:g} s into the run (flash_sale.start_seconds), after this "
                f"{planned_s:g}-s run ends: race detection will be off (lost updates under concurrent buys are "
                "unlikely to show); run longer or lower flash_sale.start_seconds")


class CapacityConfig(_Section):
    """The capacity finder (./run_tests.sh capacity, loadsuite/capacity/): config.yaml says what each knob does."""

    start_rps: float = Field(10.0, gt=0, le=MAX_RPS)
    growth: float = Field(2.0, ge=1.1, le=10.0)
    tolerance: float = Field(0.05, ge=0.005, le=0.5)
    warmup_seconds: float = Field(5.0, ge=0, le=3600)
    plateau_seconds: float = Field(15.0, ge=0.5, le=3600)
    confirm_seconds: float = Field(45.0, ge=1, le=6 * 3600)
    max_rps: float = Field(5000.0, gt=0, le=MAX_RPS)
    time_budget_seconds: float = Field(900.0, ge=5, le=MAX_SECONDS)
    min_achieved_ratio: float = Field(0.9, ge=0.5, le=1.0)
    max_late_p99_ms: float = Field(100.0, gt=0, le=60_000)

    @model_validator(mode="after")
    def _confirm_longer(self) -> "CapacityConfig":
        if self.confirm_seconds <= self.plateau_seconds:
            raise ValueError("confirm_seconds must be longer than plateau_seconds (the confirmation proves the rate "
                             "for longer than a step did)")
        if self.start_rps > self.max_rps:
            raise ValueError("start_rps must not exceed max_rps")
        return self


class SuiteConfig(_Section):
    service: ServiceConfig = ServiceConfig()
    test_data: TestDataConfig = TestDataConfig()
    # {task: weight}: a task config.yaml does not name keeps its @task weight (catalogue.py)
    scenario_weights: dict[str, Weight] = {}
    negative_weights: dict[str, Weight] = {}
    user_types: dict[str, Weight] = {}
    wait_time: WaitTimeConfig = WaitTimeConfig()
    cache: CacheConfig = CacheConfig()
    load_shape: LoadShapeConfig = LoadShapeConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    oracle: OracleConfig = OracleConfig()
    contention: ContentionConfig = ContentionConfig()
    popularity: PopularityConfig = PopularityConfig()
    flash_sale: FlashSaleConfig = FlashSaleConfig()
    capacity: CapacityConfig = CapacityConfig()

    @field_validator("scenario_weights")
    @classmethod
    def _scenario_tasks(cls, value: dict[str, int]) -> dict[str, int]:
        return _known("scenario_weights", value, catalogue.read().scenario_tasks, "task")

    @field_validator("negative_weights")
    @classmethod
    def _negative_tasks(cls, value: dict[str, int]) -> dict[str, int]:
        return _known("negative_weights", value, catalogue.read().negative_tasks, "negative task (tag negative)")

    @field_validator("user_types")
    @classmethod
    def _user_types(cls, value: dict[str, int]) -> dict[str, int]:
        return _known("user_types", value, catalogue.read().weighted_user_types, "user type")

    @model_validator(mode="after")
    def _some_work(self) -> "SuiteConfig":
        shop = catalogue.read()
        weights = catalogue.configured_task_weights(self)
        if not any(shop.task_weights(name, weights) for name in shop.weighted_user_types):
            raise ValueError("scenario_weights and negative_weights are all zero: give at least one task a weight")
        if not any(self.user_types.get(name, user.weight) for name, user in shop.user_types.items()
                   if not user.on_demand):
            raise ValueError("user_types weights are all zero: give at least one user type a weight")
        return self
