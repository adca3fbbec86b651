"""Config bounds (issue 31): a size limit read before parsing, one parse per process, a note for an empty file, and
a flash sale (the mechanism the default run's race detection relies on) that cannot open within the run is said
before the run and named in the verdict."""
from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from conftest import PYTHON, ROOT
from loadsuite.config import ConfigError, load_config, loading, parse_config
from loadsuite.config.schema import FlashSaleConfig
from loadsuite.reporting.console import scenario_notes, verdict_block
from suite_runs import run_suite, write_config


# Row C1: size ------------------------------------------------------------------------------------------------

def test_a_50_mb_config_file_is_refused_in_one_line_without_being_read(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "w") as handle:  # valid YAML: one long comment, as in the report
        handle.write("# " + "x" * (50 * 2**20) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        load_config(big, env={})
    assert time.monotonic() - started < 1.0  # refused by its size, not after 43 s of parsing
    assert str(refused.value) == (f"{big}: the file is 50.0 MiB; a config file may have at most 1 MiB (config.yaml "
                                  "has about 10 KB): is it the right file?")


def test_a_file_that_never_ends_is_refused_at_the_limit():
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        load_config("/dev/zero", env={})
    assert time.monotonic() - started < 2.0
    assert "larger than that; a config file may have at most 1 MiB" in str(refused.value)


def test_a_config_at_the_limit_is_still_read(tmp_path):
    near = tmp_path / "near.yaml"
    near.write_text("# " + "x" * (loading.MAX_CONFIG_BYTES - 100) + "\nservice:\n  client: requests\n")
    assert load_config(near, env={}).service.client == "requests"


def test_config_loader_refuses_a_big_file_with_exit_2_and_one_line(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 * 2**20))
    result = subprocess.run([PYTHON, "config_loader.py", str(big)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "a config file may have at most 1 MiB" in result.stderr


# Row C2: one parse per process ------------------------------------------------------------------------------

def test_a_process_parses_its_config_once(monkeypatch):
    from loadsuite.cli import run_args

    parses = []
    original = loading.strict_yaml
    monkeypatch.setattr(loading, "strict_yaml", lambda text: parses.append(len(text)) or original(text))
    loading._loaded.cache_clear()
    try:
        for _ in range(3):
            loading.get_config()
            loading.get_config_or_exit()
        assert len(parses) == 1
    finally:
        loading._loaded.cache_clear()
    parses.clear()
    run_args.plan(["headless", "2", "3"], env={})
    assert len(parses) == 1  # run_tests.sh's own check: one parse there, one in Locust


# Row C3: an empty file --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n"])
def test_an_empty_config_file_runs_on_defaults_with_a_note(tmp_path, text):
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    notes: list[str] = []
    config = load_config(empty, env={}, notes=notes)
    assert config == parse_config({})  # every default
    assert notes == [f"{empty} is empty (no setting, only comments or nothing): every setting takes its default "
                     "(config.yaml documents them)"]
    result = subprocess.run([PYTHON, "config_loader.py", str(empty)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and result.stderr == f"config note: {notes[0]}\n"


def test_a_file_with_settings_gets_no_note(tmp_path):
    notes: list[str] = []
    load_config(write_config(tmp_path, {"service": {"client": "requests"}}), env={}, notes=notes)
    assert notes == []


@pytest.mark.e2e
def test_run_tests_sh_says_once_that_the_config_file_is_empty(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here yet\n")
    run = run_suite("headless", "1", "1", "--config", str(empty), "--no-analysis", "--", "--tags", "health",
                    results_root=tmp_path / "results", timeout=60)
    assert run.returncode == 0, run.explain()
    assert run.stderr.count(f"{empty} is empty") == 1, run.stderr  # not again from the Locust process


# Row C4: a flash sale that cannot open within the run -----------------------------------------------------------

def test_a_sale_that_opens_after_the_planned_end_is_said_before_the_run():
    sale = FlashSaleConfig(start_seconds=10)
    assert sale.cannot_open_within(None) is None and sale.cannot_open_within(10.5) is None
    assert "opens 10 s into the run (flash_sale.start_seconds), after this 8-s run ends: race detection will be off" \
        in sale.cannot_open_within(8)
    assert FlashSaleConfig(enabled=False).cannot_open_within(1) is None


def _stats(*entries):
    return SimpleNamespace(entries={(name, "PATCH"): SimpleNamespace(name=name, num_requests=n, num_failures=f)
                                    for name, n, f in entries})


class _Buyer:
    def buy_product(self):
        pass


class _Browser:
    def browse(self):
        pass


@pytest.mark.parametrize("stats, classes, load_s, opened, why", [
    ([("Flash_Sale_Restock", 1, 0)], [_Buyer], 30, True, None),
    ([("Flash_Sale_Restock", 3, 3)], [_Buyer], 30, False, "its opening stock update failed (3 tried)"),
    ([], [_Buyer], 8, False, "the load lasted 8 s and the sale opens at 10 s (flash_sale.start_seconds)"),
    ([], [_Browser], 30, False, "no user type of this run buys (buy_product is not among its tasks)"),
    ([], [_Buyer], 30, False, "no buyer was running when it opened"),
])
def test_the_verdict_says_whether_the_sale_opened_and_if_not_why(stats, classes, load_s, opened, why):
    from loadsuite.scenarios.flash_sale import FlashSale

    sale = FlashSale(FlashSaleConfig(start_seconds=10), buy=None, restock=None, wait_s=1)
    environment = SimpleNamespace(stats=_stats(*stats),
                                  user_classes=[type(c.__name__, (), {"tasks": [c.buy_product if c is _Buyer else
                                                                                 c.browse]}) for c in classes])
    report = sale.report(environment, load_s)
    assert report["opened"] is opened
    if why is None:
        assert report["why"] is None and scenario_notes({"scenarios": {"flash_sale": report}}) == []
    else:
        assert report["why"].startswith(why) and report["why"].endswith("race detection was off: lost updates under "
                                                                          "concurrent buys are unlikely to show")
        note = scenario_notes({"scenarios": {"flash_sale": report}})
        assert note == [f"flash sale did not run: {report['why']}"]
        assert note[0] in verdict_block({"scenarios": {"flash_sale": report}}, "r")


@pytest.mark.e2e
def test_a_default_run_shorter_than_the_sale_says_so_before_and_in_every_output(tmp_path):
    run = run_suite("headless", "2", "3", results_root=tmp_path / "results", timeout=90)
    assert run.returncode == 0, run.explain()
    assert "note: the flash sale opens 10 s into the run (flash_sale.start_seconds), after this 3-s run ends" \
        in run.stderr
    report = run.summary()["scenarios"]["flash_sale"]
    assert report["enabled"] and not report["opened"] and "the sale opens at 10 s" in report["why"]
    assert f"flash sale did not run: {report['why']}" in run.stdout.strip().splitlines()[-3]
    skipped = ET.parse(run.folder / "junit.xml").getroot().find("testcase[@classname='scenarios']/skipped")
    assert skipped is not None and report["why"] in skipped.get("message")
    assert "flash sale did not run" in (run.folder / "summary.md").read_text()


@pytest.mark.e2e
def test_a_run_whose_sale_opens_names_nothing(tmp_path):
    config = write_config(tmp_path, {"flash_sale": {"start_seconds": 0.5, "duration_seconds": 2},
                                     "wait_time": {"min_seconds": 0.05, "max_seconds": 0.2}})
    run = run_suite("headless", "3", "3", "--config", str(config), "--no-analysis", "--", "ShopperUser",
                    results_root=tmp_path / "results", timeout=90)
    assert run.returncode == 0, run.explain()
    assert run.summary()["scenarios"]["flash_sale"] == {"enabled": True, "opened": True, "why": None}
    assert "flash sale" not in run.stdout and "flash sale opens" not in run.stderr
