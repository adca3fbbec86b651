"""config_loader: every kind of bad configuration is one line naming the key; good overrides apply."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import config_loader
from config_loader import ConfigError, load_config
from loadsuite import catalogue

SHOP = catalogue.read()
TASK_NAMES, NEGATIVE_TASK_NAMES = SHOP.scenario_tasks, SHOP.negative_tasks
USER_TYPES = SHOP.weighted_user_types

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, env: dict[str, str] | None = None) -> str:
    """The ConfigError message load_config raises (the test fails if it raises nothing or something else)."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={} if env is None else env)
    message = str(caught.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.fixture
def no_default_file(monkeypatch, tmp_path):
    """Point the default config path at a file that does not exist."""
    from loadsuite.config import loading  # where load_config reads it (the front door only re-exports it)
    monkeypatch.setattr(loading, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "config.yaml")


# Bad files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, key", [
    ("bogus: 1\n", "bogus"),
    ("service:\n  base_urll: http://127.0.0.1:1\n", "service.base_urll"),
    ("thresholds:\n  per_request:\n    Buy_Product: {p96_ms: 5}\n", "thresholds.per_request.Buy_Product.p96_ms"),
    ("load_shape:\n  staged:\n    stages:\n      - {duration: 5, users: 1, spawn_rate: 1, colour: red}\n",
     "load_shape.staged.stages.0.colour"),
])
def test_unknown_key_is_named(tmp_path, key, text):
    message = config_error(write(tmp_path, text))
    assert f"unknown key '{key}'" in message
    assert str(tmp_path) in message  # the file is named too


@pytest.mark.parametrize("text, key", [
    ("wait_time: {min_seconds: soon}\n", "wait_time.min_seconds"),
    ("service: {request_timeout_seconds: fast}\n", "service.request_timeout_seconds"),
    ("scenario_weights: {buy_product: lots}\n", "scenario_weights.buy_product"),
    ("scenario_weights: {buy_product: 1.5}\n", "scenario_weights.buy_product"),
    ("oracle: {enabled: sometimes}\n", "oracle.enabled"),
    ("service: [a, b]\n", "service"),
    ("service: {client: curl}\n", "service.client"),
    ("service: {base_url: ftp://example.org}\n", "service.base_url"),
    ("load_shape: {name: zigzag}\n", "load_shape.name"),
    ("contention: {stock: 0}\n", "contention.stock"),
])
def test_wrong_type_or_value_names_the_key(tmp_path, text, key):
    assert f": {key}: " in config_error(write(tmp_path, text))


def test_top_level_must_be_a_mapping(tmp_path):
    assert "top level must be a mapping" in config_error(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize("section, name", [
    ("scenario_weights", TASK_NAMES[0]), ("scenario_weights", TASK_NAMES[-1]),
    ("negative_weights", NEGATIVE_TASK_NAMES[0]), ("user_types", USER_TYPES[-1]),
])
def test_negative_weight_is_rejected(tmp_path, section, name):
    message = config_error(write(tmp_path, f"{section}: {{{name}: -1}}\n"))
    assert f"{section}.{name}" in message and "greater than or equal to 0" in message


def test_all_task_weights_zero_is_rejected(tmp_path):
    zeros = "".join(f"  {name}: 0\n" for name in TASK_NAMES)
    negative_zeros = "".join(f"  {name}: 0\n" for name in NEGATIVE_TASK_NAMES)
    message = config_error(write(tmp_path, f"scenario_weights:\n{zeros}negative_weights:\n{negative_zeros}"))
    assert "scenario_weights" in message and "all zero" in message


def test_all_user_type_weights_zero_is_rejected(tmp_path):
    zeros = "".join(f"  {name}: 0\n" for name in USER_TYPES)
    message = config_error(write(tmp_path, f"user_types:\n{zeros}"))
    assert "user_types" in message and "all zero" in message


def test_only_negative_weights_is_still_work(tmp_path):
    zeros = "".join(f"  {name}: 0\n" for name in TASK_NAMES)
    config = load_config(write(tmp_path, f"scenario_weights:\n{zeros}"), env={})
    assert config.scenario_weights["buy_product"] == 0
    weights = catalogue.configured_task_weights(config)
    assert SHOP.task_weights("ProductServiceUser", weights) == {name: 1 for name in NEGATIVE_TASK_NAMES}


ON_DEMAND = next(name for name, user in SHOP.user_types.items() if user.on_demand)


@pytest.mark.parametrize("section, name, known", [
    ("scenario_weights", "buy_products", TASK_NAMES),
    ("scenario_weights", NEGATIVE_TASK_NAMES[0], TASK_NAMES),  # a negative task belongs in negative_weights
    ("negative_weights", TASK_NAMES[0], NEGATIVE_TASK_NAMES),
    ("user_types", ON_DEMAND, USER_TYPES),  # it runs on demand: it has no weight
    ("user_types", "Shopper", USER_TYPES),
], ids=["misspelt_task", "negative_task_in_scenario_weights", "task_in_negative_weights", "on_demand_user_type",
        "misspelt_user_type"])
def test_a_name_locustfile_does_not_define_is_refused_with_the_names_it_does(tmp_path, section, name, known):
    message = config_error(write(tmp_path, f"{section}: {{{name}: 2}}\n"))
    assert f"{section}: unknown" in message and repr(name) in message
    assert message.endswith("locustfile.py defines " + ", ".join(known))


def test_a_task_config_yaml_does_not_name_keeps_its_decorators_weight(tmp_path):
    config = load_config(write(tmp_path, "scenario_weights: {buy_product: 30}\n"), env={})
    weights = SHOP.task_weights("ShopperUser", catalogue.configured_task_weights(config))
    assert weights["buy_product"] == 30
    assert weights["browse_all_products"] == SHOP.tasks["browse_all_products"].weight == 10


@pytest.mark.parametrize("text, key", [
    ("test_data: {categories: []}\n", "test_data.categories"),
    ("test_data: {categories: [Books, '']}\n", "test_data.categories"),
    ("load_shape:\n  staged: {stages: []}\n", "load_shape.staged.stages"),
])
def test_empty_lists_are_rejected(tmp_path, text, key):
    assert f": {key}: " in config_error(write(tmp_path, text))


@pytest.mark.parametrize("text, key", [
    ("load_shape:\n  staged:\n    stages: [{duration: 0, users: 1, spawn_rate: 1}]\n", "load_shape.staged.stages.0.duration"),
    ("load_shape:\n  staged:\n    stages: [{duration: 5, users: -1, spawn_rate: 1}]\n", "load_shape.staged.stages.0.users"),
    ("load_shape:\n  staged:\n    stages: [{duration: 5, users: 1, spawn_rate: 0}]\n", "load_shape.staged.stages.0.spawn_rate"),
    ("wait_time: {min_seconds: 3, max_seconds: 1}\n", "wait_time"),
    ("test_data: {stock_update_min: 50, stock_update_max: 10}\n", "test_data"),
])
def test_inconsistent_values_are_rejected(tmp_path, text, key):
    assert f": {key}: " in config_error(write(tmp_path, text))


def test_yaml_syntax_error_names_the_line(tmp_path):
    message = config_error(write(tmp_path, "service:\n  base_url: [unclosed\n  client: fast\n"))
    assert "YAML syntax error at line" in message


def test_missing_explicit_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert "config file not found" in config_error(missing)
    assert "config file not found" in config_error(env={"CONFIG_PATH": str(missing)})


def test_missing_default_file_means_defaults(no_default_file):
    config = load_config(env={})
    assert config == config_loader.SuiteConfig()
    assert config.service.base_url == "http://127.0.0.1:8082" and config.thresholds.p95_ms == 1000


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing set\n"), env={}) == config_loader.SuiteConfig()


def test_shipped_config_is_valid_and_documented_defaults_hold():
    """config.yaml shows every default: each section as the schema's, each weight as its decorator's or class's."""
    shipped = load_config(ROOT / "config.yaml", env={})
    weights = ("scenario_weights", "negative_weights", "user_types")
    assert shipped.model_copy(update={name: {} for name in weights}) == config_loader.SuiteConfig()
    weighted = {task for name in USER_TYPES for task in SHOP.user_types[name].tasks}
    assert shipped.scenario_weights == {name: SHOP.tasks[name].weight for name in TASK_NAMES if name in weighted}
    assert shipped.negative_weights == {name: SHOP.tasks[name].weight for name in NEGATIVE_TASK_NAMES}
    assert shipped.user_types == {name: SHOP.user_types[name].weight for name in USER_TYPES}


# Environment overrides ----------------------------------------------------------------------------

def test_good_environment_overrides_apply(no_default_file):
    config = load_config(env={
        "PRODUCT_SERVICE_URL": "http://127.0.0.1:9999/",
        "SERVICE_CLIENT": "requests",
        "LOAD_SHAPE": "spike",
        "THRESHOLDS": "p95_ms=500, Buy_Product.p99_ms=900,consistency=false,avg_ms=null",
    })
    assert config.service.base_url == "http://127.0.0.1:9999"
    assert config.service.client == "requests"
    assert config.load_shape.name == "spike"
    assert config.thresholds.p95_ms == 500 and config.thresholds.avg_ms is None
    assert config.thresholds.consistency is False
    assert config.thresholds.per_request["Buy_Product"].p99_ms == 900


def test_environment_wins_over_the_file(tmp_path):
    path = write(tmp_path, "load_shape: {name: staged}\nservice: {client: fast}\nthresholds: {p95_ms: 100}\n")
    config = load_config(path, env={"LOAD_SHAPE": "none", "SERVICE_CLIENT": "requests", "THRESHOLDS": "p95_ms=700"})
    assert config.load_shape.name is None
    assert config.service.client == "requests"
    assert config.thresholds.p95_ms == 700


def test_config_path_environment_chooses_the_file(tmp_path):
    path = write(tmp_path, "contention: {stock: 42}\n", "other.yaml")
    assert load_config(env={"CONFIG_PATH": str(path)}).contention.stock == 42


@pytest.mark.parametrize("env, expected", [
    ({"PRODUCT_SERVICE_URL": "ftp://example.org"}, "service.base_url"),
    ({"SERVICE_CLIENT": "curl"}, "service.client"),
    ({"LOAD_SHAPE": "zigzag"}, "LOAD_SHAPE"),
    ({"THRESHOLDS": "p95_ms"}, "THRESHOLDS"),
    ({"THRESHOLDS": "p95_ms=-5"}, "thresholds.p95_ms"),
    ({"THRESHOLDS": "p95_ms=fast"}, "thresholds.p95_ms"),
    ({"THRESHOLDS": "error_rate=2"}, "thresholds.error_rate"),
    ({"THRESHOLDS": "p42_ms=5"}, "thresholds.p42_ms"),
    ({"THRESHOLDS": "Buy_Product.p42_ms=5"}, "thresholds.per_request.Buy_Product.p42_ms"),
    ({"THRESHOLDS": "consistency=maybe"}, "thresholds.consistency"),
    ({"THRESHOLDS": "p95_ms=[1"}, "p95_ms"),  # a YAML fragment that does not parse
])
def test_bad_environment_override_names_the_key(no_default_file, env, expected):
    assert expected in config_error(env=env)


# The command line ----------------------------------------------------------------------------------

def run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **(env_extra or {})}
    return subprocess.run([sys.executable, "config_loader.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("text", [
    "bogus: 1\n", "scenario_weights: {buy_product: -1}\n", "service: {base_url: [oops\n",
    "test_data: {categories: []}\n",
])
def test_cli_bad_file_exits_2_with_one_line(tmp_path, text):
    result = run_cli(str(write(tmp_path, text)))
    assert result.returncode == 2
    assert result.stderr.startswith("config error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_missing_file_exits_2_with_one_line(tmp_path):
    result = run_cli(str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "config file not found" in result.stderr


def test_cli_bad_environment_exits_2_with_one_line(tmp_path):
    result = run_cli(str(write(tmp_path, "")), env_extra={"THRESHOLDS": "p95_ms=[1"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


def test_cli_good_file_exits_0(tmp_path):
    result = run_cli(str(write(tmp_path, "load_shape: {name: step}\n")))
    assert result.returncode == 0, result.stderr
    assert "config ok" in result.stdout and "shape step" in result.stdout
