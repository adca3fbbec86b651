"""The GitHub Actions workflows: the weekly load test (actionlint-clean, actions pinned by commit SHA, installs from
the lock file, its own steps run in order on this machine against the reference service, a job summary with
tables and no broken images) and the tests workflow that runs ./run_tests.sh test on every push and pull request."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from loadsuite import SUITE_VERSION

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


def test_results_summary_and_history_are_published_before_the_job_is_failed():
    job = steps()
    setup = step_using("actions/setup-python")
    assert setup["with"]["cache"] == "pip" and str(setup["with"]["python-version"]).startswith("3.11")
    names = [step.get("name", "") for step in job]
    uploads = [step for step in job if step.get("uses", "").startswith("actions/upload-artifact")]
    summary = next(step for step in job if "GITHUB_STEP_SUMMARY" in step.get("run", ""))
    fetch, judge, publish = (next(step for step in job if step.get("id") == i) for i in ("history_fetch", "history", "publish"))
    verdict = job[-1]
    for step in (*uploads, summary, verdict, judge, publish):
        assert step.get("if", "").startswith("always()"), step.get("name")
    assert fetch.get("continue-on-error") is True  # an unreachable history never hides the run's own verdict
    assert "analyze_results.py --history" in judge["run"] and "performance-history.sh add" in judge["run"]
    assert "github.event.repository.default_branch" in publish["if"]  # other branches read the history, never write it
    assert names.index(fetch["name"]) < names.index(judge["name"]) < names.index(publish["name"]) \
        < names.index(summary["name"]) < len(job) - 1
    assert all(names.index(u["name"]) < len(job) - 1 for u in uploads)
    assert "exit" in verdict["run"] and "::error::" in verdict["run"] and "steps.history.outputs.regression" in \
        str(verdict["env"])
    assert workflow()["permissions"] == {"contents": "write"}
    assert workflow()["concurrency"]["group"] == "performance-history"  # one writer of the branch at a time


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
    history_remote: Path
    env: dict[str, str]
    results: list[StepResult] = field(default_factory=list)

    def step(self, name_part: str) -> StepResult:
        return next(result for result in self.results if name_part in result.name)


def run_job(tmp_path: Path, inputs: dict, history_remote: Path, variables: dict | None = None) -> JobRun:
    """Run the job's steps in order: `run:` steps as written, `uses:` steps by their local equivalents; the history
    branch lives in a bare repository on this machine (history_remote) instead of the GitHub repository."""
    job = workflow()["jobs"][JOB]
    workspace, runner_temp = tmp_path / "workspace", tmp_path / "runner_temp"
    workspace.mkdir(parents=True)
    runner_temp.mkdir(parents=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("GITHUB_", "RUNNER_", "CONFIG_PATH", "RESULTS_ROOT", "WEB_", "UPDATE_DOCS"))}
    env.update({"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace),
                "RUNNER_TEMP": str(runner_temp), "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
                "STOP_TIMEOUT": "3"})
    env.update({"GITHUB_REPOSITORY": "example/product-service-load-tests", "GITHUB_SERVER_URL": "https://github.example",
                "GITHUB_RUN_ID": "4242", "HISTORY_REMOTE": str(history_remote), "GIT_TIMEOUT_S": "30"})
    run = JobRun(workspace, tmp_path / "step_summary.md", tmp_path / "artifacts", history_remote, env)
    run.summary_file.write_text("")
    context = {"inputs": inputs, "secrets": {}, "vars": variables or {}, "steps": {}, "runner": {"temp": str(runner_temp)},
               "github": {"workspace": str(workspace), "ref_name": "main", "ref": "refs/heads/main", "token": "",
                          "event": {"repository": {"default_branch": "main"}}}}
    context["env"] = {key: substitute(value, context) for key, value in job.get("env", {}).items()}
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


def bare_remote(path: Path) -> Path:
    """An empty repository standing in for the GitHub repository's history branch."""
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True, timeout=30)
    return path


def branch_files(remote: Path, branch: str = "performance-history") -> list[str]:
    listed = subprocess.run(["git", "--git-dir", str(remote), "ls-tree", "-r", "--name-only", branch],
                            capture_output=True, text=True, timeout=30)
    return listed.stdout.split() if listed.returncode == 0 else []


def push_history(remote: Path, runs: list[dict], work: Path) -> None:
    """Put a fake history (runs/<run id>/summary.json for each summary) on the remote's history branch."""
    for data in runs:
        folder = work / "runs" / data["run_id"]
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(data))
    for command in (["init", "-q", "-b", "performance-history"], ["add", "-A"],
                    ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "fake history"],
                    ["push", "-q", str(remote), "HEAD:refs/heads/performance-history"]):
        subprocess.run(["git", "-C", str(work), *command], check=True, timeout=30, capture_output=True)


RELATIVE_IMAGE = re.compile(r"!\[[^\]]*\]\((?![a-z]+://)")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> JobRun:
    """The job on a first Monday: no history yet, the bundled reference service, a short light load."""
    tmp = tmp_path_factory.mktemp("first_run")
    return run_job(tmp, SHORT_INPUTS, history_remote=bare_remote(tmp / "origin.git"))


@pytest.mark.e2e
def test_job_steps_run_green_and_publish_the_run_folder_summary_and_history(first_run):
    run = first_run
    assert all(r.returncode == 0 for r in run.results if r.ran), _describe(run)
    assert all(r.ran for r in run.results), _describe(run)
    run_dir = Path(next(iter((run.workspace / "results").glob("2*"))))
    summary_md = (run_dir / "summary.md").read_text()
    job_summary = run.summary_file.read_text()
    assert "](chart_" in summary_md  # the run folder's summary.md shows its charts beside it ...
    assert not RELATIVE_IMAGE.search(job_summary)  # ... the job summary has no image it cannot show
    table = summary_md[summary_md.index("## Requests"):summary_md.index("## Failures")]
    assert table.strip() and table in job_summary  # the tables are there as they are
    for chart in ("chart_response_times.png", "chart_throughput.png", "chart_latency_distribution.png"):
        assert f"`{chart}` in the `performance-results` artifact" in job_summary
        assert (run_dir / chart).is_file()
    artifact = run.artifacts / step_using("actions/upload-artifact")["with"]["name"]
    for name in ("summary.json", "summary.md", "report.html", "stats_stats.csv", "junit.xml"):
        assert (artifact / name).is_file(), name
    data = json.loads((artifact / "summary.json").read_text())
    assert data["bundled_service"] is True and data["suite_version"] == SUITE_VERSION
    assert '"requests": 0,' not in (artifact / "summary.json").read_text()
    # The history: started on this run, judged (too short to judge), pushed, its charts shown at that commit.
    assert "does not exist yet: this run starts it" in run.step("Fetch the run history").output
    assert "not judged" in run.step("Judge").output
    files = branch_files(run.history_remote)
    assert f"runs/{run_dir.name}/summary.json" in files and "trend/history.md" in files
    assert "trend/history_g1_total.png" in files
    sha = subprocess.run(["git", "--git-dir", str(run.history_remote), "rev-parse", "performance-history"],
                         capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    assert f"history commit {sha}" in run.step("Publish").output
    assert f"](https://github.example/example/product-service-load-tests/raw/{sha}/trend/history_g1_total.png)" \
        in job_summary
    assert (run.artifacts / "performance-history-report" / "history.md").is_file()
    assert "run history: no regression" in run.step("Verdict").output


@pytest.mark.e2e
def test_job_fails_on_a_history_regression_but_still_publishes(first_run, tmp_path):
    """24 earlier weeks at 100x today's throughput and last week like today: a change two runs ago, beyond tolerance."""
    measured = json.loads((first_run.artifacts / "performance-results" / "summary.json").read_text())
    started = datetime.fromisoformat(measured["started_at"])
    runs = []
    for week in range(25, 0, -1):
        data = json.loads(json.dumps(measured))
        data["run_id"] = f"week-{week:02d}"
        data["started_at"] = (started - timedelta(weeks=week)).isoformat()
        if week > 1:
            for row in (data["totals"], *data["endpoints"]):
                row["rps"] = row["rps"] * 100 + 100
        runs.append(data)
    remote = bare_remote(tmp_path / "origin.git")
    push_history(remote, runs, tmp_path / "fake")
    # A 5-second run has a few requests per name: the repository variable lowers the history's minimum.
    run = run_job(tmp_path / "job", SHORT_INPUTS, history_remote=remote, variables={"HISTORY_MIN_SAMPLES": "1"})
    judge, verdict = run.step("Judge"), run.step("Verdict")
    assert "history: 25 runs from branch performance-history" in run.step("Fetch the run history").output
    assert judge.ran and judge.returncode == 0, _describe(run)
    assert "REGRESSION: throughput of Total" in judge.output and "since run 25 of 26 (week-01)" in judge.output
    assert verdict.returncode != 0 and "the run history says the latest run regressed" in verdict.output
    for step in ("Publish", "Upload the run folder", "summary"):
        assert run.step(step).ran and run.step(step).returncode == 0, _describe(run)
    assert len([f for f in branch_files(remote) if f.endswith("summary.json")]) == 26  # this run joined the history
    assert "REGRESSION: throughput of Total" in run.summary_file.read_text()


def test_job_summary_names_relative_charts_and_keeps_tables_and_absolute_images(tmp_path):
    from loadsuite.cli.job_summary import main, without_images
    text = "| a | b |\n|---|---|\n\n![Throughput](chart_throughput.png)\n![logo](https://example.com/x.png)\n"
    out = without_images(text, "performance-results")
    assert "| a | b |" in out and "![logo](https://example.com/x.png)" in out
    assert "Throughput: `chart_throughput.png` in the `performance-results` artifact of this run" in out
    assert "](chart_" not in out
    assert main([str(tmp_path)]) == 2  # no summary.md: the step writes its own one-line note instead


# The history branch's script on a fake history (no load test) ------------------------------------------------

HISTORY_SCRIPT = ROOT / ".github" / "scripts" / "performance-history.sh"


def history_script(*args: str, remote: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HISTORY_REMOTE": str(remote), "GIT_TIMEOUT_S": "30"}
    env.pop("GH_TOKEN", None)
    return subprocess.run(["bash", str(HISTORY_SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_history_step_fetches_judges_and_publishes_a_fake_history(tmp_path):
    from fake_history import noisy_factors, summary
    remote = bare_remote(tmp_path / "origin.git")
    factors = noisy_factors(31, seed=21, step_at=30, step=0.5)
    push_history(remote, [summary(week, f) for week, f in enumerate(factors[:30])], tmp_path / "fake")
    run_dir = tmp_path / "results" / "20260810T050000Z"  # this week's run, as run_tests.sh leaves it
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary(31, factors[30])))
    (run_dir / "capacity.json").write_text(json.dumps({"capacity_rps": 420.0}))
    (run_dir / "report.html").write_text("<html>not kept in the history</html>")
    checkout = tmp_path / "history"
    fetched = history_script("fetch", str(checkout), remote=remote, cwd=tmp_path)
    assert fetched.returncode == 0 and "30 runs from branch performance-history" in fetched.stdout, fetched.stderr
    added = history_script("add", str(checkout), str(run_dir), remote=remote, cwd=tmp_path)
    assert added.returncode == 0 and sorted(p.name for p in (checkout / "runs" / run_dir.name).iterdir()) == \
        ["capacity.json", "summary.json"], added.stderr
    kept = json.loads((checkout / "runs" / run_dir.name / "summary.json").read_text())
    assert kept["host"] == summary(31, factors[30])["host"]  # the bundled service's URL says nothing
    secret = {**summary(32), "bundled_service": False, "host": "https://staging.internal.example:8443"}
    (run_dir / "summary.json").write_text(json.dumps(secret))
    assert history_script("add", str(checkout), str(run_dir), remote=remote, cwd=tmp_path).returncode == 0
    kept = json.loads((checkout / "runs" / run_dir.name / "summary.json").read_text())
    assert kept["host"].startswith("sha256:") and "staging" not in json.dumps(kept)  # a target URL never lands there
    assert {k: v for k, v in kept.items() if k != "host"} == {k: v for k, v in secret.items() if k != "host"}
    (run_dir / "summary.json").write_text(json.dumps(summary(31, factors[30])))
    assert history_script("add", str(checkout), str(run_dir), remote=remote, cwd=tmp_path).returncode == 0
    judged = subprocess.run([sys.executable, str(ROOT / "analyze_results.py"), "--history", str(checkout / "runs"),
                             "--out", str(checkout / "trend")], capture_output=True, text=True, timeout=120)
    assert judged.returncode == 1 and "since run 30 of 31" in judged.stdout, judged.stdout + judged.stderr
    published = history_script("publish", str(checkout), "history: run x", remote=remote, cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    sha = published.stdout.strip()
    files = branch_files(remote)
    assert f"runs/{run_dir.name}/capacity.json" in files and "trend/history.md" in files and len(
        [f for f in files if f.endswith("summary.json")]) == 31
    assert "trend/history_g1_total.png" in files and not any(f.endswith("report.html") for f in files)
    again = history_script("publish", str(checkout), "history: run x", remote=remote, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == sha and "nothing new" in again.stderr


def test_the_history_script_never_starts_a_new_history_over_an_unreachable_or_moved_one(tmp_path):
    missing = history_script("fetch", str(tmp_path / "h"), remote=tmp_path / "no-such.git", cwd=tmp_path)
    assert missing.returncode == 1 and "cannot reach" in missing.stderr and "nothing is pushed" in missing.stderr
    remote = bare_remote(tmp_path / "origin.git")
    first, second = tmp_path / "first", tmp_path / "second"
    for checkout in (first, second):
        assert history_script("fetch", str(checkout), remote=remote, cwd=tmp_path).returncode == 0
        (checkout / "runs" / checkout.name).mkdir()
        (checkout / "runs" / checkout.name / "summary.json").write_text("{}")
    assert history_script("publish", str(first), "one", remote=remote, cwd=tmp_path).returncode == 0
    moved = history_script("publish", str(second), "two", remote=remote, cwd=tmp_path)
    assert moved.returncode == 1 and "was refused" in moved.stderr  # no force push: the first run's history stays
    assert "runs/first/summary.json" in branch_files(remote) and "runs/second/summary.json" not in branch_files(remote)


@pytest.mark.parametrize("args, message", [
    (("fetch",), "usage: performance-history.sh fetch DIR"),
    (("add", "history", "results/none"), "summary.json: not found"),
    (("publish", "nowhere", "m"), "not a history checkout"),
    (("fetch", "."), "already exists"),
    (("pull",), "usage:"),
    (("add", "history", "bad-run"), "bad-run/summary.json: not a JSON object"),
])
def test_the_history_script_says_what_is_wrong_with_exit_2(tmp_path, args, message):
    (tmp_path / "history" / "runs").mkdir(parents=True)
    (tmp_path / "bad-run").mkdir()
    (tmp_path / "bad-run" / "summary.json").write_text("{truncated")
    result = history_script(*args, remote=tmp_path / "origin.git", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
