"""The GitHub Actions workflows: the weekly load test (actionlint-clean, actions pinned by commit SHA, installs from
the lock file, its own steps run in order on this machine against the reference service, a job summary with
tables and no broken images) and the tests workflow that runs ./run_tests.sh test on every push and pull request."""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "performance.yml"
TESTS_WORKFLOW = ROOT / ".github" / "workflows" / "tests.yml"
WORKFLOWS = (WORKFLOW, TESTS_WORKFLOW)
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
ACTIONLINT = Path(sys.executable).parent / "actionlint"
VENV_BIN = Path(sys.executable).parent
JOB = "load-test"
SHORT_INPUTS = {"users": "3", "duration": "5", "host": "", "shape": "none"}


def workflow(path: Path = WORKFLOW) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps() -> list[dict]:
    return workflow()["jobs"][JOB]["steps"]


def step_using(prefix: str) -> dict:
    return next(step for step in steps() if step.get("uses", "").startswith(prefix))


# Static checks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_actionlint(path):
    result = subprocess.run([str(ACTIONLINT), str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version_named(path):
    uses = [step["uses"] for job in workflow(path)["jobs"].values() for step in job["steps"] if "uses" in step]
    assert uses, path
    for action in uses:
        assert PINNED.match(action), f"{action}: pin by the full commit SHA, not a tag"
    for line in path.read_text().splitlines():
        if "uses:" in line:
            assert re.search(r"#\s*v\d+\.\d+\.\d+", line), f"name the version the SHA is: {line.strip()}"


def test_the_load_test_installs_the_lock_files_versions():
    install = next(step for step in steps() if "pip install" in step.get("run", ""))
    assert "-c requirements.lock" in install["run"] and "-r requirements.txt" in install["run"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r requirements.txt -c requirements.lock" in dockerfile  # the same versions as the image
    assert "requirements.lock" in step_using("actions/setup-python")["with"]["cache-dependency-path"]


def test_tests_workflow_runs_the_projects_tests_on_push_and_pull_request():
    tests = workflow(TESTS_WORKFLOW)
    assert {"push", "pull_request"} <= set(tests["on"])
    [job] = tests["jobs"].values()
    assert "bookworm" in job["container"]["image"] and "3.11" in job["container"]["image"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == ["bash .ci/run"]
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install" in ci_run and ci_run.rstrip().endswith("./run_tests.sh test")
    for package in ("nginx", "wrk", "hey", "victoria-metrics", "chromium"):
        assert package in ci_run


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ inputs.nope.deeper }}\n        if: steps.missing.outputs.x\n"
                      "      - uses: actions/checkout@v4\n        with: {no_such_input: 1}\n")
    result = subprocess.run([str(ACTIONLINT), str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no_such_input" in result.stdout


def test_runs_every_monday_and_on_demand_with_load_inputs():
    triggers = workflow()["on"]
    cron = triggers["schedule"][0]["cron"].split()
    assert cron[2:] == ["*", "*", "1"], cron  # any day of month, any month, Monday
    inputs = triggers["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"users", "duration", "host", "shape"}
    assert set(inputs["shape"]["options"]) == {"none", "staged", "spike", "step"}
    env = workflow()["jobs"][JOB]["env"]
    assert "inputs.host" in env["TARGET_HOST"] and "secrets.PRODUCT_SERVICE_URL" in env["TARGET_HOST"]


def test_results_and_summary_are_published_before_the_job_is_failed():
    job = steps()
    setup = step_using("actions/setup-python")
    assert setup["with"]["cache"] == "pip" and str(setup["with"]["python-version"]).startswith("3.11")
    names = [step.get("name", "") for step in job]
    upload = step_using("actions/upload-artifact")
    download = step_using("actions/download-artifact")
    assert download["with"]["name"] == upload["with"]["name"]
    assert "steps.previous.outputs.run_id" in download["with"]["run-id"] and download.get("continue-on-error") is True
    previous = next(step for step in job if step.get("id") == "previous")
    assert "--status success" in previous["run"] and previous.get("continue-on-error") is True
    summary = next(step for step in job if "GITHUB_STEP_SUMMARY" in step.get("run", ""))
    verdict = job[-1]
    for step in (upload, summary, verdict):
        assert step.get("if", "").startswith("always()"), step.get("name")
    assert names.index(upload["name"]) < len(job) - 1 and names.index(summary["name"]) < len(job) - 1
    assert "exit" in verdict["run"] and "::error::" in verdict["run"]
    assert any("analyze_results.py --compare" in step.get("run", "") for step in job)


# Running the job's own steps on this machine ---------------------------------------------------------------

class _Unset(str):
    """A context value GitHub would give as null: empty, and falsy."""


def _lookup(path: str, context: dict) -> object:
    value: object = context
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _Unset()
        value = value[part]
    return value


_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(&&|\|\||==|!=|!|\(|\))|([A-Za-z_][\w.-]*\(\))|([A-Za-z_][\w.-]*)|(\d+))")


def evaluate(expression: str, context: dict, failed: bool) -> object:
    """The subset of GitHub's expression language the workflow uses: contexts, literals, ! && || == != and status functions."""
    python, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        assert match and match.end() > position, f"unsupported expression: {expression!r}"
        literal, operator, function, name, number = match.groups()
        if literal:
            python.append(repr(literal[1:-1].replace("''", "'")))
        elif operator:
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(operator, operator))
        elif function:
            python.append({"always()": "True", "success()": str(not failed), "failure()": str(failed),
                           "cancelled()": "False"}[function])
        elif name:
            python.append(f"_lookup({name!r}, context)")
        else:
            python.append(number)
        position = match.end()
    return eval("".join(python), {"_lookup": _lookup, "context": context})  # noqa: S307 - test-only, our own workflow


def substitute(text: str, context: dict) -> str:
    def value(match):
        result = evaluate(match.group(1), context, failed=False)
        return {True: "true", False: "false"}.get(result, str(result)) if isinstance(result, bool) else str(result)
    return re.sub(r"\$\{\{(.*?)\}\}", value, str(text))


def should_run(step: dict, context: dict, failed: bool) -> bool:
    condition = str(step.get("if", "success()"))
    condition = re.sub(r"^\$\{\{(.*)\}\}$", r"\1", condition.strip())
    if not re.search(r"\b(always|success|failure|cancelled)\(\)", condition):
        condition = f"success() && ({condition})"
    return bool(evaluate(condition, context, failed))


@dataclass
class StepResult:
    name: str
    ran: bool
    returncode: int = 0
    output: str = ""
    how: str = "run"


@dataclass
class JobRun:
    """One local run of the job: its workspace, job summary, uploaded artifacts and every step's result."""

    workspace: Path
    summary_file: Path
    artifacts: Path
    baseline: Path | None
    env: dict[str, str]
    results: list[StepResult] = field(default_factory=list)

    def step(self, name_part: str) -> StepResult:
        return next(result for result in self.results if name_part in result.name)


def run_job(tmp_path: Path, inputs: dict, baseline: Path | None = None, variables: dict | None = None) -> JobRun:
    """Run the job's steps in order: `run:` steps as written, `uses:` steps by their local equivalents."""
    job = workflow()["jobs"][JOB]
    workspace, runner_temp = tmp_path / "workspace", tmp_path / "runner_temp"
    workspace.mkdir(parents=True)
    runner_temp.mkdir(parents=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("GITHUB_", "RUNNER_", "CONFIG_PATH", "RESULTS_ROOT", "WEB_", "UPDATE_DOCS"))}
    env.update({"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace),
                "RUNNER_TEMP": str(runner_temp), "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
                "STOP_TIMEOUT": "3"})
    # GitHub's API is the one thing not on this machine: a `gh` that knows one previous successful run, or none.
    fake_bin = tmp_path / "fake_bin"
    fake_bin.mkdir()
    (fake_bin / "gh").write_text("#!/bin/sh\n" + ("echo 4242\n" if baseline is not None else "") + "exit 0\n")
    (fake_bin / "gh").chmod(0o755)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env.get('PATH', '')}"
    env["GITHUB_REPOSITORY"] = "example/product-service-load-tests"
    run = JobRun(workspace, tmp_path / "step_summary.md", tmp_path / "artifacts", baseline, env)
    run.summary_file.write_text("")
    context = {"inputs": inputs, "secrets": {}, "vars": variables or {}, "steps": {}, "runner": {"temp": str(runner_temp)},
               "github": {"workspace": str(workspace), "ref_name": "main", "ref": "refs/heads/main", "token": ""}}
    failed = False
    for index, step in enumerate(job["steps"]):
        name = step.get("name") or step.get("uses") or f"step {index}"
        if not should_run(step, context, failed):
            run.results.append(StepResult(name, ran=False))
            continue
        env = {**run.env, **{k: substitute(v, context) for k, v in job.get("env", {}).items()}}
        env.update({k: substitute(v, context) for k, v in step.get("env", {}).items()})
        outputs: dict[str, str] = {}
        if "uses" in step:
            result = _local_equivalent(step, name, context, run, outputs)
        else:
            result = _run_step(step, name, index, context, env, runner_temp, workspace, outputs, run)
        run.results.append(result)
        if step.get("id"):
            context["steps"][step["id"]] = {"outputs": outputs,
                                            "outcome": "success" if result.returncode == 0 else "failure"}
        if result.returncode != 0 and not step.get("continue-on-error"):
            failed = True
    return run


def _run_step(step: dict, name: str, index: int, context: dict, env: dict, runner_temp: Path, workspace: Path,
              outputs: dict, run: JobRun) -> StepResult:
    """A `run:` step as GitHub runs it: bash --noprofile --norc -eo pipefail, fresh GITHUB_OUTPUT and GITHUB_ENV."""
    output_file, env_file = runner_temp / f"output-{index}", runner_temp / f"env-{index}"
    output_file.write_text("")
    env_file.write_text("")
    env = {**env, "GITHUB_OUTPUT": str(output_file), "GITHUB_ENV": str(env_file)}
    script = runner_temp / f"step-{index}.sh"
    script.write_text(substitute(step["run"], context))
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                          cwd=workspace / step.get("working-directory", "."), env=env, capture_output=True,
                          text=True, timeout=300, start_new_session=True)
    outputs.update(_key_values(output_file.read_text()))
    run.env.update(_key_values(env_file.read_text()))
    return StepResult(name, True, proc.returncode, proc.stdout + proc.stderr)


def _key_values(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV lines: key=value and key<<DELIMITER ... DELIMITER."""
    values, lines = {}, iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def _copy_repository(workspace: Path) -> None:
    """What actions/checkout gives: the repository's files as they are in the working tree (not ignored ones)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout
    for relative in filter(None, listed.decode().split("\0")):
        source = ROOT / relative
        if source.is_file():
            (workspace / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, workspace / relative)


def _local_equivalent(step: dict, name: str, context: dict, run: JobRun, outputs: dict) -> StepResult:
    uses = step["uses"]
    settings = {key: substitute(value, context) for key, value in (step.get("with") or {}).items()}
    if uses.startswith("actions/checkout@"):
        _copy_repository(run.workspace)
        return StepResult(name, True, how="local: copied the tracked files into the workspace")
    if uses.startswith("actions/setup-python@"):
        # The project's .venv holds Python 3.11 with requirements.txt; first on PATH, as setup-python does.
        run.env["PATH"] = f"{VENV_BIN}{os.pathsep}{run.env.get('PATH', '')}"
        return StepResult(name, True, how="local: .venv/bin first on PATH")
    if uses.startswith("actions/download-artifact@"):
        assert settings.get("run-id"), "downloads only from a previous run found by the step before"
        shutil.copytree(run.baseline, run.workspace / settings.get("path", "."), dirs_exist_ok=True)
        return StepResult(name, True, how=f"local: copied {run.baseline} (run {settings['run-id']})")
    if uses.startswith("actions/upload-artifact@"):
        source = Path(settings["path"])
        source = source if source.is_absolute() else run.workspace / source
        if not source.is_dir():
            failing = settings.get("if-no-files-found", "warn") == "error"
            return StepResult(name, True, 1 if failing else 0, f"no files at {source}", how="local: upload")
        shutil.copytree(source, run.artifacts / settings["name"], dirs_exist_ok=True)
        return StepResult(name, True, how="local: copied the run folder into the artifact store")
    pytest.fail(f"no local equivalent for {uses}: add one to tests/test_workflow.py")


def _describe(run: JobRun) -> str:
    return "\n".join(f"--- {r.name}: ran={r.ran} rc={r.returncode} ({r.how})\n{r.output[-1500:]}" for r in run.results)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> JobRun:
    """The job on a first Monday: no previous run, the bundled reference service, a short light load."""
    return run_job(tmp_path_factory.mktemp("first_run"), SHORT_INPUTS)


@pytest.mark.e2e
def test_job_steps_run_green_and_publish_the_run_folder_and_summary(first_run):
    run = first_run
    assert all(r.returncode == 0 for r in run.results if r.ran), _describe(run)
    assert all(r.ran for r in run.results if "Compare" not in r.name and "Download" not in r.name), _describe(run)
    assert not run.step("Download").ran  # no previous successful run: nothing to download
    run_dir = Path(next(iter((run.workspace / "results").glob("2*"))))
    summary_md = (run_dir / "summary.md").read_text()
    job_summary = run.summary_file.read_text()
    assert "](chart_" in summary_md  # the run folder's summary.md shows its charts beside it ...
    assert "![" not in job_summary  # ... the job summary has no image it cannot show
    table = summary_md[summary_md.index("## Requests"):summary_md.index("## Failures")]
    assert table.strip() and table in job_summary  # the tables are there as they are
    for chart in ("chart_response_times.png", "chart_throughput.png", "chart_latency_distribution.png"):
        assert f"`{chart}` in the `performance-results` artifact" in job_summary
        assert (run_dir / chart).is_file()
    artifact = run.artifacts / step_using("actions/upload-artifact")["with"]["name"]
    for name in ("summary.json", "summary.md", "report.html", "stats_stats.csv", "junit.xml"):
        assert (artifact / name).is_file(), name
    assert "no previous successful run" in run.step("Compare").output
    assert "no previous run to compare with" in run.step("Verdict").output
    assert '"requests": 0,' not in (artifact / "summary.json").read_text()


@pytest.mark.e2e
def test_job_fails_on_a_regression_but_still_publishes(first_run, tmp_path):
    baseline = tmp_path / "baseline"
    shutil.copytree(first_run.artifacts / step_using("actions/upload-artifact")["with"]["name"], baseline)
    _make_faster(baseline / "stats_stats.csv")
    # A 5-second run has a few requests per name: the repository variable lowers the comparison's minimum.
    run = run_job(tmp_path / "job", SHORT_INPUTS, baseline=baseline, variables={"COMPARE_MIN_SAMPLES": "1"})
    assert run.step("Download").ran and "run 4242" in run.step("Download").how
    compare, verdict = run.step("Compare"), run.step("Verdict")
    assert compare.ran and compare.returncode == 0, _describe(run)
    assert verdict.returncode != 0 and "regression against the previous successful run" in verdict.output
    assert run.step("Upload").ran and run.step("Upload").returncode == 0
    assert run.step("summary").returncode == 0
    run_dir = next(iter((run.workspace / "results").glob("2*")))
    compare_md = (run_dir / "compare.md").read_text()
    assert compare_md[:compare_md.index("![")].strip() in run.summary_file.read_text()
    assert "`chart_compare.png` in the `performance-results` artifact" in run.summary_file.read_text()
    assert (run.artifacts / step_using("actions/upload-artifact")["with"]["name"] / "compare.md").is_file()


def _make_faster(stats_csv: Path) -> None:
    """Turn a baseline into one the current run cannot match: 100x the throughput, 1 ms percentiles."""
    rows = list(csv.DictReader(stats_csv.open()))
    for row in rows:
        row["Requests/s"] = str(float(row["Requests/s"]) * 100 + 100)
        for column in ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"):
            row[column] = "1"
    with stats_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_job_summary_names_relative_charts_and_keeps_tables_and_absolute_images(tmp_path):
    from loadsuite.cli.job_summary import main, without_images
    text = "| a | b |\n|---|---|\n\n![Throughput](chart_throughput.png)\n![logo](https://example.com/x.png)\n"
    out = without_images(text, "performance-results")
    assert "| a | b |" in out and "![logo](https://example.com/x.png)" in out
    assert "Throughput: `chart_throughput.png` in the `performance-results` artifact of this run" in out
    assert "](chart_" not in out
    assert main([str(tmp_path)]) == 2  # no summary.md: the step writes its own one-line note instead
