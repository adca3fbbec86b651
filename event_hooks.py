"""Every Locust event listener of the suite is attached here, in register(), called by the locustfile.

The parts (loadsuite/...) expose plain functions and their (event, listener) pairs; none registers itself.
What runs where: workers ship their custom stats (and oracle records) to the master, and a last report when
they stop, which the master waits for (bounded) before it reads any statistics; the master or the
single local process snapshots stock, sets up the contention product, and at the end runs the oracle,
judges the thresholds and writes custom_report.csv, summary.json and junit.xml into the run's results
folder, then sets the process exit code (0 pass, 1 fail).
"""
from __future__ import annotations

from functools import partial

import gevent
from locust.runners import WorkerRunner

import monitoring

from loadsuite import capacity, openmodel, oracle
from loadsuite.config import SuiteConfig, influxdb_token
from loadsuite.distributed import final_reports
from loadsuite.runtime import end_of_run
from loadsuite.runtime.attach import attach_listeners
from loadsuite.runtime.custom_stats import STATS
from loadsuite.runtime.run import (SuiteRun, locust_is_the_program, normalise_host, refuse_bad_locust_arguments,
                                   select_user_classes)
from loadsuite.webui import tab


def register(events, config: SuiteConfig, scenarios=(), resets=()) -> SuiteRun:
    """Attach the suite's listeners to Locust's events (once per process); returns the run they share.
    `scenarios` (the flash sale) begin with every test: their begin(test) runs with the other parts' resets, as
    does each of `resets` (the locustfile's product cache)."""
    events.init_command_line_parser.add_listener(_add_arguments)
    refuse_bad_locust_arguments(config)  # `locust -f locustfile.py ...` is as strict as run_tests.sh
    run = SuiteRun(config)
    if locust_is_the_program():  # now, not only at init: Locust builds its web UI before init, and Ctrl-C may come
        run.watch_interrupts()
    run.scenarios = list(scenarios)
    run.resets += [scenario.begin for scenario in scenarios]
    run.resets += [lambda _test, reset=reset: reset() for reset in resets]
    finish = partial(end_of_run.finish, run)
    end_of_run.guard_locust_csv_writer()
    events.init.add_listener(lambda environment, **_kw: _on_init(run, environment))
    events.test_start.add_listener(run.on_test_start)  # before the oracle's: contention stock first
    events.spawning_complete.add_listener(run.on_spawning_complete)
    events.test_stopping.add_listener(run.on_test_stopping)
    events.test_stop.add_listener(partial(run.on_test_stop, finish=finish))
    events.report_to_master.add_listener(lambda client_id, data, **_kw: data.__setitem__("run_stats", STATS.drain()))
    events.worker_report.add_listener(lambda client_id, data, **_kw: STATS.merge(data.get("run_stats") or {}))
    events.quitting.add_listener(partial(end_of_run.on_quitting, run))
    return run


def _add_arguments(parser) -> None:
    parser.add_argument("--results-dir", default="", include_in_web_ui=False,
                        help="Folder for summary.json, junit.xml and custom_report.csv (default: the --csv folder)")
    parser.add_argument("--capacity-search", action="store_true", default=False, include_in_web_ui=False,
                        help="Search for the highest rate the target sustains (config.yaml capacity; run_tests.sh capacity)")
    parser.add_argument("--require-capacity", type=float, default=None, include_in_web_ui=False, metavar="RATE",
                        help="With --capacity-search: exit 1 when the proven capacity is below RATE req/s")


def _on_init(run: SuiteRun, environment) -> None:
    """Build this process's parts now that the runner exists, and attach their listeners."""
    options = environment.parsed_options
    searching = bool(getattr(options, "capacity_search", False)) if options else False
    if searching:  # every process (workers too: they run the executor) runs the search's config
        run.config = capacity.search_config(run.config)
        for scenario in run.scenarios:
            if hasattr(scenario, "config") and scenario.name == "flash_sale":
                scenario.config = run.config.flash_sale
    config = run.config
    run.watch_interrupts()  # an embedded Environment (tests) from its init; once per process
    normalise_host(environment)
    end_of_run.take_over_html_report(run, environment)
    select_user_classes(environment)
    pairs = openmodel.install(environment, config.load_shape)  # none without an open model
    if config.oracle.enabled:
        oracle.install(environment, config.oracle)
        pairs += oracle.listeners(environment)
    # Every part's per-test state starts over in one place: SuiteRun.on_test_start, the first test_start listener.
    run.resets += [lambda _test: openmodel.reset(environment), lambda _test: oracle.reset(environment),
                   lambda _test: final_reports.reset(environment)]
    tab.install(environment, run.current_summary, STATS.snapshot, pending=run.verdict_pending)
    run.monitor = monitoring.install(environment, config.monitoring.influxdb, influxdb_token(), run.run_id,
                                 custom_stats=STATS.snapshot)
    if run.monitor is not None:
        pairs += run.monitor.listeners()
    pairs += final_reports.listeners(environment)  # none when the oracle has attached them (after its own)
    pairs.append(("test_start", run.on_load_start))  # last: after the contention setup and the start snapshot
    attach_listeners(environment.events, pairs)
    if searching and not isinstance(environment.runner, WorkerRunner):
        from loadsuite.capacity import driver
        driver.install(run, environment, config.capacity, getattr(options, "require_capacity", None))
    # Locust arms the --run-time timer right after init; gevent's loop clock still reads the time the loop
    # last ran (before the locustfile import and these listeners), so the run would end that much early.
    gevent.get_hub().loop.update_now()
