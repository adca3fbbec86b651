"""Load shapes and the open model's target rate: tick() sequences on a fake clock, validation, shares, one real run."""
from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from locust.runners import MasterRunner

import custom_load_shape
from loadsuite.openmodel import rate as rate_module
from config_loader import load_config, ConfigError, LoadShapeConfig, parse_config
from custom_load_shape import ProfileShape, ascii_plot, profile_for, shape_class_for

ROOT = Path(__file__).resolve().parent.parent


class FakeUser:
    pass


class OtherUser(FakeUser):
    pass


def load_shape(**section) -> LoadShapeConfig:
    return parse_config({"load_shape": section}).load_shape


def shape_at(shape_class, runner=None):
    """An instance of the shape whose run time is whatever `clock.t` says."""
    clock = SimpleNamespace(t=0.0)
    shape = shape_class()
    shape.get_run_time = lambda: clock.t
    shape.runner = runner
    return shape, clock


def ticks(shape_class, times, runner=None):
    shape, clock = shape_at(shape_class, runner)
    out = []
    for t in times:
        clock.t = t
        out.append(shape.tick())
    return out


def fake_runner(*classes):
    environment = SimpleNamespace(process_exit_code=None)
    return SimpleNamespace(user_classes_by_name={c.__name__: c for c in classes}, environment=environment)


# --- shapes -------------------------------------------------------------------------------------

def test_no_shape_name_means_plain_locust_control():
    assert shape_class_for(load_shape()) is None


def test_default_staged_profile_ramps_up_holds_and_ramps_down_then_stops():
    cls = shape_class_for(load_shape(name="staged"))
    assert issubclass(cls, ProfileShape) and cls.__name__ == "StagedLoadShape" and not cls.abstract
    assert cls.profile.total_duration == 110
    got = ticks(cls, [0, 15, 29.99, 30, 60, 89.99, 90, 100, 109.99, 110, 500])
    assert got == [(10, 0.34), (10, 0.34), (10, 0.34), (10, 2), (10, 2), (10, 2), (0, 0.5), (0, 0.5), (0, 0.5), None, None]


def test_staged_ticks_follow_configured_stages_at_boundaries_and_mid_stage():
    cls = shape_class_for(load_shape(name="staged", staged={"stages": [
        {"duration": 5, "users": 3, "spawn_rate": 1},
        {"duration": 2.5, "users": 8, "spawn_rate": 4},
        {"duration": 1, "users": 1, "spawn_rate": 10},
    ]}))
    got = ticks(cls, [0, 2.5, 4.999, 5, 6, 7.499, 7.5, 8, 8.499, 8.5, 9])
    assert got == [(3, 1), (3, 1), (3, 1), (8, 4), (8, 4), (8, 4), (1, 10), (1, 10), (1, 10), None, None]


def test_stage_user_classes_are_passed_through_as_classes_and_other_stages_get_all():
    cls = shape_class_for(load_shape(name="staged", staged={"stages": [
        {"duration": 2, "users": 2, "spawn_rate": 2, "user_classes": ["OtherUser"]},
        {"duration": 2, "users": 4, "spawn_rate": 2},
        {"duration": 2, "users": 3, "spawn_rate": 2, "user_classes": ["FakeUser", "OtherUser"]},
    ]}))
    got = ticks(cls, [1, 3, 5, 6], runner=fake_runner(FakeUser, OtherUser))
    assert got == [(2, 2, [OtherUser]), (4, 2, [FakeUser, OtherUser]), (3, 2, [FakeUser, OtherUser]), None]


def test_unknown_user_class_at_run_time_stops_the_run_with_exit_2(caplog):
    cls = shape_class_for(load_shape(name="staged", staged={"stages": [
        {"duration": 2, "users": 2, "spawn_rate": 2, "user_classes": ["GhostUser"]}]}))
    runner = fake_runner(FakeUser)
    assert ticks(cls, [0], runner=runner) == [None]
    assert runner.environment.process_exit_code == 2
    assert "GhostUser" in caplog.text and "FakeUser" in caplog.text


def test_spike_profile_is_baseline_spike_recovery_then_stop():
    cls = shape_class_for(load_shape(name="spike", spike={
        "baseline_users": 2, "spike_users": 20, "baseline_seconds": 10, "spike_seconds": 5,
        "recovery_seconds": 8, "spawn_rate": 10}))
    assert cls.__name__ == "SpikeLoadShape" and cls.profile.total_duration == 23
    got = ticks(cls, [0, 9.99, 10, 12, 14.99, 15, 22.99, 23])
    assert got == [(2, 10), (2, 10), (20, 10), (20, 10), (20, 10), (2, 10), (2, 10), None]


def test_step_profile_adds_step_users_up_to_max_then_holds_one_more_step():
    cls = shape_class_for(load_shape(name="step", step={
        "step_users": 4, "step_seconds": 10, "max_users": 10, "spawn_rate": 2}))
    assert cls.__name__ == "StepLoadShape" and cls.profile.total_duration == 40
    got = ticks(cls, [0, 9.99, 10, 19.99, 20, 25, 30, 39.99, 40])
    assert got == [(4, 2), (4, 2), (8, 2), (8, 2), (10, 2), (10, 2), (10, 2), (10, 2), None]


def test_profile_at_reports_stage_index_bounds_and_target_rps():
    profile = profile_for(load_shape(staged={"stages": [
        {"duration": 4, "users": 2, "spawn_rate": 1, "target_rps": 20},
        {"duration": 6, "users": 5, "spawn_rate": 1}]}), "staged")
    first, second = profile.at(3.9), profile.at(4)
    assert (first.index, first.started_at, first.ends_at, first.target_rps) == (0, 0, 4, 20)
    assert (second.index, second.started_at, second.ends_at, second.target_rps) == (1, 4, 10, None)
    assert profile.at(10) is None


def test_expected_users_ramp_at_spawn_rate_within_a_stage():
    profile = profile_for(load_shape(staged={"stages": [
        {"duration": 10, "users": 10, "spawn_rate": 2}, {"duration": 5, "users": 4, "spawn_rate": 3}]}), "staged")
    assert [profile.expected_users(t) for t in (0, 1, 4, 5, 9, 10, 11, 12, 14, 15)] == \
        [0, 2, 8, 10, 10, 10, 7, 4, 4, 0]


def test_all_shape_classes_have_distinct_names_for_the_class_picker():
    classes = custom_load_shape.all_shape_classes(load_shape())
    assert sorted(classes) == ["SpikeLoadShape", "StagedLoadShape", "StepLoadShape"]
    assert [c.profile.name for c in classes.values()] == ["staged", "spike", "step"]


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stages, key", [
    ([{"duration": -1, "users": 1, "spawn_rate": 1}], "load_shape.staged.stages.0.duration"),
    ([{"duration": 0, "users": 1, "spawn_rate": 1}], "load_shape.staged.stages.0.duration"),
    ([{"duration": 5, "users": 1, "spawn_rate": 1}, {"duration": 5, "users": -2, "spawn_rate": 1}],
     "load_shape.staged.stages.1.users"),
    ([{"duration": 5, "users": 1, "spawn_rate": 0}], "load_shape.staged.stages.0.spawn_rate"),
    ([{"duration": 5, "users": 1, "spawn_rate": -3}], "load_shape.staged.stages.0.spawn_rate"),
    ([], "load_shape.staged.stages"),
])
def test_invalid_stage_lists_are_rejected_by_the_config_with_one_line(stages, key):
    with pytest.raises(ConfigError) as caught:
        parse_config({"load_shape": {"name": "staged", "staged": {"stages": stages}}}, "cfg.yaml")
    message = str(caught.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize("section, names, key", [
    ({"step": {"step_users": 10, "max_users": 5}}, None, "load_shape.step.max_users"),
    ({"spike": {"baseline_users": 10, "spike_users": 10}}, None, "load_shape.spike.spike_users"),
    ({"staged": {"stages": [{"duration": 1, "users": 1, "spawn_rate": 1, "user_classes": []}]}}, None,
     "load_shape.staged.stages[0].user_classes"),
    ({"staged": {"stages": [{"duration": 1, "users": 1, "spawn_rate": 1},
                            {"duration": 1, "users": 1, "spawn_rate": 1, "user_classes": ["A", "A"]}]}}, None,
     "load_shape.staged.stages[1].user_classes"),
    ({"staged": {"stages": [{"duration": 1, "users": 1, "spawn_rate": 1, "user_classes": ["Nope"]}]}},
     ["ProductServiceUser"], "load_shape.staged.stages[0].user_classes"),
    ({"staged": {"stages": [{"duration": 1, "users": 0, "spawn_rate": 1, "target_rps": 5}]}}, None,
     "load_shape.staged.stages[0].target_rps"),
])
def test_stage_rules_beyond_pydantic_raise_one_line_config_errors(section, names, key):
    name = next(iter(section))
    with pytest.raises(ConfigError) as caught:
        shape_class_for(load_shape(name=name, **section), user_class_names=names)
    message = str(caught.value)
    assert message.startswith(key) and ": " in message and "\n" not in message


def test_plot_cli_with_invalid_config_exits_2_with_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("load_shape:\n  step: {step_users: 10, max_users: 3}\n")
    proc = subprocess.run([sys.executable, "custom_load_shape.py", "--plot", "step", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "load_shape.step.max_users" in proc.stderr


def test_ascii_plot_column_heights_follow_the_profile():
    profile = profile_for(load_shape(staged={"stages": [
        {"duration": 10, "users": 10, "spawn_rate": 100}, {"duration": 10, "users": 5, "spawn_rate": 100},
        {"duration": 10, "users": 0, "spawn_rate": 100}]}), "staged")
    rows = [line.split("|", 1)[1].ljust(30) for line in ascii_plot(profile, width=30, height=10).splitlines()
            if "|" in line]
    heights = [sum(row[col] == "#" for row in rows) for col in range(30)]
    assert heights == [10] * 10 + [5] * 10 + [0] * 10


@pytest.mark.parametrize("document", ["docs/load_shapes.md", "README.md"])
def test_docs_embed_the_plots_generated_from_the_shape_code(document):
    doc = (ROOT / document).read_text()
    for name in ("staged", "spike", "step"):
        plot = ascii_plot(profile_for(parse_config({}).load_shape, name))
        assert plot in doc, f"{document} is out of date for {name}: regenerate it with --plot {name}"


def test_shipped_config_yaml_has_the_default_shapes():
    """The pictures are drawn from the defaults; config.yaml must ship the same profiles."""
    assert load_config(ROOT / "config.yaml", env={}).load_shape == parse_config({}).load_shape


# --- the open model's target rate (stages, workers, achieved) -------------------------------------------

class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def fake_environment(users: int, shape=None):
    stats = SimpleNamespace(total=SimpleNamespace(num_reqs_per_sec={}))  # Locust's: {int(time.time()): count}
    return SimpleNamespace(runner=SimpleNamespace(user_count=users), shape_class=shape, stats=stats)


def test_stage_target_rps_wins_over_overall_and_a_zero_user_stage_has_no_target():
    cls = shape_class_for(load_shape(name="staged", target_rps=30, staged={"stages": [
        {"duration": 5, "users": 5, "spawn_rate": 5, "target_rps": 100},
        {"duration": 5, "users": 5, "spawn_rate": 5},
        {"duration": 5, "users": 0, "spawn_rate": 5}]}))
    shape, shape_clock = shape_at(cls)
    rate = rate_module.TargetRate.from_config(load_shape(name="staged", target_rps=30))
    environment = fake_environment(5, shape=shape)
    seen = []
    for t in (1, 6, 11, 16):
        shape_clock.t = t
        seen.append(rate.target_rps(environment))
    assert seen == [100, 30, None, None]


def test_no_target_anywhere_means_no_open_model():
    assert rate_module.TargetRate.from_config(load_shape(name="staged")) is None
    assert rate_module.TargetRate.from_config(load_shape(staged={"stages": [
        {"duration": 1, "users": 1, "spawn_rate": 1, "target_rps": 3}]})) is not None


def test_max_in_flight_has_a_default_and_a_bound():
    assert load_shape().max_in_flight == 1000
    for bad in (0, 10_001):
        with pytest.raises(ConfigError, match="load_shape.max_in_flight"):
            parse_config({"load_shape": {"max_in_flight": bad}})


def test_shape_class_or_exit_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        custom_load_shape.shape_class_or_exit(load_shape(name="step", step={"step_users": 9, "max_users": 3}))
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: load_shape.step.max_users") and err.count("\n") == 1


@pytest.mark.parametrize("workers, bound, share, bound_share", [(2, 1000, 15.0, 500), (3, 10, 10.0, 4),
                                                           (0, 10, None, 10)])
def test_master_sends_each_worker_an_equal_share_of_the_rate_and_the_bound(workers, bound, share, bound_share):
    class RecordingMaster(MasterRunner):
        greenlet = None
        user_count = 0

        def __init__(self):
            self.sent = []
            self.clients = SimpleNamespace(ready=[None] * min(workers, 1), spawning=[],
                                           running=[None] * max(workers - 1, 0))

        def send_message(self, msg_type, data=None, client_id=None):
            self.sent.append((msg_type, data, client_id))

    master = RecordingMaster()
    environment = SimpleNamespace(runner=master, shape_class=None,
                                  stats=SimpleNamespace(total=SimpleNamespace(num_reqs_per_sec={})))
    assert rate_module.TargetRate(30.0, bound).sample(environment) == 30.0
    assert master.sent == [(rate_module.RATE_MESSAGE, {"target_rps": share, "max_in_flight": bound_share}, None)]


def rate_on_fake_clock(target_rps: float, users: int):
    """A TargetRate on a fake clock, its environment and Locust's per-second counters to fill in."""
    clock = FakeClock()
    environment = fake_environment(users)
    return clock, rate_module.TargetRate(target_rps, 1000, clock=clock), environment, \
        environment.stats.total.num_reqs_per_sec


def test_report_says_when_the_achieved_rate_falls_short_of_the_target():
    clock, rate, environment, per_second = rate_on_fake_clock(200.0, users=20)
    for second in range(10):                              # samples at 1000 .. 1009, the test stops at 1010
        rate.sample(environment)
        per_second[1000 + second] = 143                   # 143 requests logged in each of the ten seconds
        clock.t += 1
    rate.sample(environment, final=True)
    report = rate.report(environment)
    assert (report.target_rps, report.achieved_rps, report.seconds, report.met) == (200, 143, 10, False)
    assert report.message().startswith("target 200 rps, achieved 143 rps (below target")


def test_requests_count_in_the_second_they_were_logged_however_late_a_worker_reports_them():
    clock, rate, environment, per_second = rate_on_fake_clock(100.0, users=2)
    for second in range(5):
        rate.sample(environment)
        clock.t += 1
    rate.sample(environment, final=True)                  # the test stopped at 1005
    assert rate.report(environment).requests == 0        # the workers have not reported yet
    for second in range(1000, 1005):                      # their last reports arrive after test_stop
        per_second[second] = 100
    per_second[1007] = 30                                 # a closed-model second after the stop: not counted
    report = rate.report(environment)
    assert (report.requests, report.achieved_rps, report.met) == (500, 100, True)


def test_a_soak_run_counts_every_second_although_locust_keeps_only_the_last_minute():
    clock, rate, environment, per_second = rate_on_fake_clock(10.0, users=2)
    for second in range(300):
        rate.sample(environment)
        per_second[int(clock.t)] = 10
        for old in [s for s in per_second if s < clock.t - 60]:  # as runtime.run trims them
            del per_second[old]
        clock.t += 1
    rate.sample(environment, final=True)
    report = rate.report(environment)
    assert (report.seconds, report.requests, report.achieved_rps) == (300, 3000, 10)


def test_report_ignores_seconds_without_a_target_and_accepts_a_met_target():
    clock = FakeClock()
    cls = shape_class_for(load_shape(name="staged", staged={"stages": [
        {"duration": 2, "users": 0, "spawn_rate": 5}, {"duration": 3, "users": 5, "spawn_rate": 5, "target_rps": 50},
        {"duration": 2, "users": 0, "spawn_rate": 5}]}))
    shape, shape_clock = shape_at(cls)
    rate = rate_module.TargetRate(None, 1000, clock=clock)
    environment = fake_environment(5, shape=shape)
    per_second = environment.stats.total.num_reqs_per_sec
    per_second.update({1001: 7, 1002: 49, 1003: 49, 1004: 49, 1005: 7})  # the stages around it run no target
    for second in range(7):
        shape_clock.t = second + 0.5
        rate.sample(environment)
        clock.t += 1
    report = rate.report(environment)
    assert (report.seconds, report.requests, report.met) == (3, 147, True)
    assert report.message() == "target 50 rps, achieved 49 rps"


# --- end to end -----------------------------------------------------------------------------------

E2E_LOCUSTFILE = """
    from locust import FastHttpUser, between, task
    from config_loader import load_config
    from custom_load_shape import shape_class_for

    cfg = load_config()

    class HealthUser(FastHttpUser):
        wait_time = between(0.05, 0.1)

        @task
        def health(self):
            self.client.get("/health", name="Health_Check")

    ShapeClass = shape_class_for(cfg.load_shape, user_class_names=["HealthUser"])
"""

E2E_CONFIG = """
load_shape:
  name: staged
  staged:
    stages:
      - {duration: 3, users: 2, spawn_rate: 20}
      - {duration: 3, users: 4, spawn_rate: 20}
      - {duration: 2, users: 1, spawn_rate: 20}
"""


def run_locust(tmp_path, host, config, *extra):
    """Run the tiny locustfile headless with a shape config; returns (process, seconds it took)."""
    (tmp_path / "locustfile.py").write_text(textwrap.dedent(E2E_LOCUSTFILE))
    (tmp_path / "config.yaml").write_text(config)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CONFIG_PATH": str(tmp_path / "config.yaml"),
           "NO_PROXY": "127.0.0.1"}
    cmd = [sys.executable, "-m", "locust", "-f", str(tmp_path / "locustfile.py"), "--headless",
           "--host", host, "-t", "60", "--csv", str(tmp_path / "stats"), "--csv-full-history",
           "--only-summary", "--loglevel", "WARNING", *extra]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    return proc, time.monotonic() - started


@pytest.mark.e2e
def test_staged_run_follows_the_stages_and_stops_by_itself(tmp_path, product_service):
    proc, elapsed = run_locust(tmp_path, product_service.url, E2E_CONFIG)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert elapsed < 30, f"the shape lasts 8 s but the run took {elapsed:.0f} s (the -t limit was 60 s)"

    with open(tmp_path / "stats_stats_history.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["Name"] == "Aggregated"]
    counts = [int(row["User Count"]) for row in rows]
    plateaus = [n for i, n in enumerate(counts) if i == 0 or n != counts[i - 1]]
    assert [n for n in plateaus if n in (1, 2, 4)] == [2, 4, 1], counts
    assert counts.count(2) >= 2 and counts.count(4) >= 2, counts
