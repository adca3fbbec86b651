"""Bad configuration stops run_tests.sh with exit 2 and one line naming the key, before any traffic.

One case of each kind runs the real `run_tests.sh headless` against a counting proxy (tests/fault_proxy.py):
the proxy proves that not a single request reached the target, and RESULTS_ROOT that no run folder was
created. Every case, variants included, is also checked in-process against config_loader.load_config,
which is what run_tests.sh (`python config_loader.py`) and the locustfile call first.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config_loader import ConfigError, load_config
from loadsuite import catalogue
from conftest import ROOT, free_port
from fault_proxy import FaultProxy

TRACEBACK = "Traceback (most recent call last)"
SHOP = catalogue.read()
ZERO_TASKS, ZERO_NEGATIVES = SHOP.scenario_tasks, SHOP.negative_tasks

# (case id, config.yaml text, text the one error line must contain); KINDS run through run_tests.sh too
KINDS = ("yaml_syntax_error", "unknown_section", "wrong_type", "negative_weight", "all_task_weights_zero",
         "empty_categories", "stage_zero_duration", "threshold_error_rate_above_one", "duplicate_section",
         "boolean_as_a_number", "stage_with_100_million_users", "url_with_user_info")
BAD_FILES = [
    ("yaml_syntax_error", "service:\n  base_url: [http://127.0.0.1:8082\n", "YAML syntax error at line"),
    ("yaml_bad_indentation", "service:\n  base_url: x\n client: fast\n", "YAML syntax error at line 3"),
    ("top_level_not_a_mapping", "- service\n- thresholds\n", "top level must be a mapping"),
    ("unknown_section", "servce:\n  base_url: http://127.0.0.1:8082\n", "unknown key 'servce'"),
    ("unknown_nested_key", "wait_time:\n  min_secs: 1\n", "unknown key 'wait_time.min_secs'"),
    ("wrong_type", "service:\n  request_timeout_seconds: fast\n", "service.request_timeout_seconds"),
    ("wrong_type_list_for_mapping", "scenario_weights: [1, 2]\n", "scenario_weights"),
    ("bad_url", "service:\n  base_url: 127.0.0.1:8082\n", "service.base_url: must start with http://"),
    ("unknown_client", "service:\n  client: curl\n", "service.client"),
    ("negative_weight", "scenario_weights:\n  buy_product: -1\n", "scenario_weights.buy_product"),
    ("negative_user_weight", "user_types:\n  AdminUser: -2\n", "user_types.AdminUser"),
    ("all_task_weights_zero",
     "scenario_weights: {" + ", ".join(f"{t}: 0" for t in ZERO_TASKS) + "}\n"
     "negative_weights: {" + ", ".join(f"{t}: 0" for t in ZERO_NEGATIVES) + "}\n",
     "scenario_weights and negative_weights are all zero"),
    ("all_user_weights_zero",
     "user_types: {" + ", ".join(f"{u}: 0" for u in SHOP.weighted_user_types) + "}\n",
     "user_types weights are all zero"),
    ("empty_categories", "test_data:\n  categories: []\n", "test_data.categories: must list at least one category"),
    ("empty_category_name", "test_data:\n  categories: [Books, '']\n", "test_data.categories"),
    ("stock_range_reversed", "test_data:\n  stock_update_min: 50\n  stock_update_max: 5\n", "stock_update_min"),
    ("wait_time_reversed", "wait_time:\n  min_seconds: 3\n  max_seconds: 1\n", "min_seconds must not exceed"),
    ("no_stages", "load_shape:\n  staged:\n    stages: []\n", "load_shape.staged.stages: must list at least one"),
    ("stage_zero_duration", "load_shape:\n  staged:\n    stages:\n      - {duration: 0, users: 5, spawn_rate: 1}\n",
     "load_shape.staged.stages.0.duration"),
    ("stage_missing_users", "load_shape:\n  staged:\n    stages:\n      - {duration: 10, spawn_rate: 1}\n",
     "load_shape.staged.stages.0.users"),
    ("stage_negative_users", "load_shape:\n  staged:\n    stages:\n      - {duration: 10, users: -3, spawn_rate: 1}\n",
     "load_shape.staged.stages.0.users"),
    ("unknown_shape", "load_shape:\n  name: ramp\n", "load_shape.name"),
    ("threshold_error_rate_above_one", "thresholds:\n  error_rate: 2\n", "thresholds.error_rate"),
    ("threshold_negative_latency", "thresholds:\n  p95_ms: -5\n", "thresholds.p95_ms"),
    ("threshold_wrong_type", "thresholds:\n  p99_ms: fast\n", "thresholds.p99_ms"),
    ("threshold_unknown_metric", "thresholds:\n  per_request:\n    Buy_Product: {p95: 500}\n",
     "thresholds.per_request.Buy_Product.p95"),
    ("oracle_bound_too_small", "oracle:\n  max_records: 5\n", "oracle.max_records"),
    # Strictness (issue 15): what YAML lets through silently is refused with the key named.
    ("duplicate_section", "thresholds:\n  p95_ms: 500\nservice: {}\nthresholds:\n  p95_ms: 5000\n",
     "duplicate key 'thresholds' (first at line 1)"),
    ("duplicate_nested_key", "thresholds:\n  p95_ms: 500\n  p95_ms: 5000\n", "duplicate key 'p95_ms'"),
    ("boolean_as_a_number", "thresholds:\n  p95_ms: true\n", "thresholds.p95_ms: true/false is not a value here"),
    ("boolean_as_a_weight", "scenario_weights:\n  buy_product: false\n", "scenario_weights.buy_product"),
    ("boolean_as_a_timeout", "service:\n  request_timeout_seconds: true\n", "service.request_timeout_seconds"),
    ("infinite_number", "thresholds:\n  p99_ms: .inf\n", "thresholds.p99_ms: Input should be a finite number"),
    ("not_a_number", "wait_time:\n  max_seconds: .nan\n", "wait_time.max_seconds: Input should be a finite number"),
    ("stage_with_100_million_users",
     "load_shape:\n  staged:\n    stages:\n      - {duration: 10, users: 100000000, spawn_rate: 1}\n",
     "load_shape.staged.stages.0.users: Input should be less than or equal to 100000"),
    ("spike_spawn_rate_too_high", "load_shape:\n  spike:\n    spawn_rate: 1e9\n", "load_shape.spike.spawn_rate"),
    ("stage_longer_than_a_week",
     "load_shape:\n  staged:\n    stages:\n      - {duration: 1e12, users: 1, spawn_rate: 1}\n",
     "load_shape.staged.stages.0.duration"),
    ("url_with_user_info", "service:\n  base_url: http://shop:hunter2@127.0.0.1:8082\n",
     "service.base_url: 'http://***@127.0.0.1:8082' carries user info"),
    ("monitoring_bad_prefix", "monitoring:\n  influxdb:\n    measurement_prefix: 'my prefix'\n",
     "monitoring.influxdb.measurement_prefix"),
]


@pytest.fixture(scope="module")
def target():
    """A stand-in target that counts every request it gets (none must arrive)."""
    with FaultProxy(free_port(), mode="error500") as proxy:
        yield proxy


def run_suite(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "RESULTS_ROOT": str(tmp_path / "results"), "USE_SYSTEM_PYTHON": "1",
                "PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(ROOT / "run_tests.sh"), *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def assert_refused_before_traffic(result: subprocess.CompletedProcess, tmp_path: Path, target, needle: str) -> str:
    """Exit 2, exactly one line on stderr containing `needle`, nothing else; no request, no run folder."""
    assert TRACEBACK not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, f"expected one line, got {lines}"
    assert needle in lines[0], lines[0]
    assert result.stdout.strip() == ""
    assert target.total_requests == 0, "the target got traffic despite the bad configuration"
    assert not (tmp_path / "results").exists(), "a results folder was created"
    return lines[0]


@pytest.mark.parametrize("text, needle", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_bad_config_is_one_line_config_error_naming_the_key(tmp_path, text, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(config, env={})
    message = str(error.value)
    assert "\n" not in message and needle in message and str(config) in message, message


@pytest.mark.parametrize("text, needle", [case[1:] for case in BAD_FILES if case[0] in KINDS],
                         ids=[case[0] for case in BAD_FILES if case[0] in KINDS])
def test_bad_config_file_exits_2_with_one_line_before_traffic(tmp_path, target, text, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    result = run_suite(tmp_path, "headless", "1", "1", target.url, "--config", str(config))
    line = assert_refused_before_traffic(result, tmp_path, target, needle)
    assert str(config) in line, "the message must say which file is wrong"


def _unreadable_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    directory = tmp_path / "a-directory.yaml"
    directory.mkdir()
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"service:\n  base_url: \xff\xfe\x00\n")
    cases = {"missing_file": (tmp_path / "nope.yaml", "config file not found"),
             "directory": (directory, "is a directory, not a config file"),
             "not_utf8": (binary, "not UTF-8 text (at byte offset 21): save it as UTF-8")}
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        locked = tmp_path / "locked.yaml"
        locked.write_text("service: {}\n")
        locked.chmod(0)
        cases["no_permission"] = (locked, "cannot read config file (Permission denied)")
    return cases


def test_unreadable_config_file_exits_2_with_one_line_before_traffic(tmp_path, target):
    for name, (path, needle) in _unreadable_cases(tmp_path).items():
        result = run_suite(tmp_path, "headless", "1", "1", target.url, "--config", str(path))
        line = assert_refused_before_traffic(result, tmp_path, target, needle)
        assert str(path) in line, name


@pytest.mark.parametrize("args, needle", [
    (["--threshold", "p95_ms=fast"], "thresholds.p95_ms"),
    (["--threshold", "p95_ms"], "THRESHOLDS: 'p95_ms' is not KEY=VALUE"),
    (["--threshold", "error_rate=1.5"], "thresholds.error_rate"),
    (["--shape", "ramp"], "unknown shape 'ramp'"),
    (["--client", "curl"], "unknown client 'curl'"),
], ids=["threshold_wrong_type", "threshold_not_key_value", "threshold_out_of_range", "unknown_shape_flag",
        "unknown_client_flag"])
def test_bad_command_line_configuration_exits_2_before_traffic(tmp_path, target, args, needle):
    result = run_suite(tmp_path, "headless", "1", "1", target.url, *args)
    assert_refused_before_traffic(result, tmp_path, target, needle)


def test_bad_config_in_the_environment_exits_2_before_traffic(tmp_path, target):
    result = run_suite(tmp_path, "headless", "1", "1", target.url, env={"PRODUCT_SERVICE_URL": "ftp://x"})
    assert_refused_before_traffic(result, tmp_path, target, "service.base_url: must start with http://")


def test_locust_started_directly_with_a_bad_config_exits_2_with_one_line(tmp_path, target):
    """Without run_tests.sh the locustfile's own check stops the run the same way."""
    config = tmp_path / "bad.yaml"
    config.write_text("scenario_weights:\n  buy_product: -1\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "1", "-t", "1",
                             "--host", target.url], cwd=ROOT, env={**os.environ, "CONFIG_PATH": str(config)},
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert TRACEBACK not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "scenario_weights.buy_product" in lines[0], lines
    assert target.total_requests == 0


def test_a_password_in_a_url_is_never_printed(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("service:\n  base_url: http://shop:hunter2@127.0.0.1:8082/\n", encoding="utf-8")
    for env in ({}, {"PRODUCT_SERVICE_URL": "http://shop:hunter2@127.0.0.1:8082"}):
        with pytest.raises(ConfigError) as error:
            load_config(config if not env else None, env=env)
        assert "hunter2" not in str(error.value) and "user info" in str(error.value)


@pytest.mark.parametrize("spec, expected", [
    ("error_rate=false", {"error_rate": None}),  # off: no limit, not the strictest limit 0
    ("p95_ms=off", {"p95_ms": None}),
    ("p99_ms=none", {"p99_ms": None}),
    ("consistency=false", {"consistency": False}),
    ("consistency=off", {"consistency": False}),
    ("consistency=true", {"consistency": True}),
    ("error_rate=0", {"error_rate": 0.0}),  # a number is a limit, 0 included
])
def test_threshold_overrides_mean_what_a_user_expects(spec, expected):
    thresholds = load_config(None, env={"THRESHOLDS": spec, "CONFIG_PATH": ""}).thresholds
    assert {key: getattr(thresholds, key) for key in expected} == expected


@pytest.mark.parametrize("spec", ["p95_ms=true", "error_rate=true", "p99_ms=inf", "p95_ms=nan"])
def test_threshold_override_true_or_non_finite_is_refused(spec):
    with pytest.raises(ConfigError) as error:
        load_config(None, env={"THRESHOLDS": spec})
    assert spec.split("=")[0] in str(error.value)


def test_service_url_is_normalised_like_the_host_argument():
    config = load_config(None, env={"PRODUCT_SERVICE_URL": "http://127.0.0.1:8082/api/"})
    assert config.service.base_url == "http://127.0.0.1:8082/api"


@pytest.mark.parametrize("args, env, needle", [
    (["Nobody"], {}, "unknown user class 'Nobody'"),
    (["--host", "http://shop:hunter2@127.0.0.1:9"], {}, "carries user info"),
    (["BrowserUser"], {"config": "scenario_weights: {" + ", ".join(
        f"{t}: 0" for t in SHOP.user_types["BrowserUser"].tasks) + "}\n"}, "user class BrowserUser has no task"),
    (["--tags", "nosuchtag"], {}, "unknown tag 'nosuchtag'"),
], ids=["unknown_user_class", "host_with_user_info", "user_class_without_an_enabled_task", "unknown_tag"])
def test_locust_started_directly_is_as_strict_as_run_tests_sh(tmp_path, target, args, env, needle):
    """`locust -f locustfile.py` checks its user classes, tags and --host before any traffic, like run_tests.sh."""
    full_env = {**os.environ}
    if "config" in env:
        config = tmp_path / "config.yaml"
        config.write_text(env["config"], encoding="utf-8")
        full_env["CONFIG_PATH"] = str(config)
    host = [] if "--host" in args else ["--host", target.url]
    result = subprocess.run([sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-u", "1", "-t", "1",
                             *host, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert TRACEBACK not in result.stderr + result.stdout and "hunter2" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert target.total_requests == 0
