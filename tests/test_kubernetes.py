"""The Kubernetes manifests (deploy/kubernetes): rendered with kustomize, valid against the Kubernetes API's own
schemas (kubernetes-validate, offline, strict), and wired the way run_tests.sh and the image expect: the master a
Job whose exit status is the verdict, the workers sized by the one WORKERS value, the results on a volume."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT
from loadsuite.cli.run_args import plan

K8S = ROOT / "deploy" / "kubernetes"
VARIANTS = ("headless", "ui", "reference-service")
VERSION = kubernetes_validate.latest_version()


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("neither kustomize nor kubectl is installed: .ci/run installs kustomize (go install)")


def render(directory: Path) -> list[dict]:
    result = subprocess.run([*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validation_errors(docs: list[dict]) -> list[str]:
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {error.message}")
    return errors


def by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def container(workload: dict) -> dict:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return only


def env_of(workload: dict, settings: dict) -> dict[str, str]:
    """The container's environment as the pod sees it, ConfigMap references resolved."""
    out = {}
    for item in container(workload).get("env", []):
        ref = item.get("valueFrom", {}).get("configMapKeyRef")
        out[item["name"]] = settings["data"][ref["key"]] if ref else item["value"]
    return out


def expanded_args(workload: dict, settings: dict) -> list[str]:
    env = env_of(workload, settings)
    args = container(workload)["args"]
    for name, value in env.items():
        args = [arg.replace(f"$({name})", value) for arg in args]
    return args


def settings_of(docs: list[dict]) -> dict:
    [settings] = [doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("locust-settings")]
    return settings


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_and_is_valid_against_the_kubernetes_schemas(variant):
    docs = render(K8S / variant)
    assert docs and validation_errors(docs) == []


def test_a_broken_manifest_is_caught_by_the_schemas_and_a_broken_kustomization_by_kustomize(tmp_path):
    docs = render(K8S / "headless")
    job = by_kind(docs)[("Job", "locust-master")]
    job["spec"]["backofLimit"] = 0  # a typo: strict validation refuses the unknown field
    [error] = validation_errors(docs)
    assert "backofLimit" in error and error.startswith("Job/locust-master")
    del job["spec"]["backofLimit"]
    container(job)["ports"][0]["containerPort"] = "5557"  # a string where the API wants an integer
    [error] = validation_errors(docs)
    assert "'5557' is not of type 'integer'" in error
    container(job)["ports"][0]["containerPort"] = 5557
    del container(job)["name"]  # a container without its name
    [error] = validation_errors(docs)
    assert "'name' is a required property" in error
    broken = tmp_path / "broken"
    shutil.copytree(K8S, broken)
    kustomization = broken / "headless" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("spec.parallelism", "spec.parallelizm"))
    result = subprocess.run([*kustomize_command(), str(broken / "headless")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "parallelizm" in result.stderr, result.stderr


def test_headless_master_is_a_job_whose_exit_status_is_the_verdict_and_keeps_the_results():
    docs = render(K8S / "headless")
    kinds = by_kind(docs)
    master, settings = kinds[("Job", "locust-master")], settings_of(docs)
    spec = master["spec"]
    assert spec["backoffLimit"] == 0 and spec["template"]["spec"]["restartPolicy"] == "Never"  # never run twice
    assert spec["activeDeadlineSeconds"] > 0  # the whole run has a deadline, the wait for workers too:
    args = expanded_args(master, settings)
    assert args[args.index("--expect-workers-max-wait") + 1].isdigit()
    accepted = plan(args, env={})  # run_tests.sh's own parser accepts what the pod runs
    assert accepted.mode == "master" and accepted.users == int(settings["data"]["USERS"])
    assert accepted.host == settings["data"]["TARGET_HOST"] and "--expect-workers-max-wait" in accepted.locust_extra
    env = env_of(master, settings)
    assert env["EXPECT_WORKERS"] == settings["data"]["WORKERS"] and env["MASTER_BIND_HOST"] == "0.0.0.0"
    mount = container(master)["volumeMounts"][0]
    assert mount["mountPath"] == "/app/results"  # the image's RESULTS_ROOT
    assert "ENV" in (ROOT / "Dockerfile").read_text() and "RESULTS_ROOT=/app/results" in (ROOT / "Dockerfile").read_text()
    volume = spec["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] in {name for kind, name in kinds if kind == "PersistentVolumeClaim"}


@pytest.mark.parametrize("variant, kind, field", [("headless", "Job", "parallelism"), ("ui", "Deployment", "replicas")])
def test_one_value_sizes_the_workers_and_what_the_master_waits_for(tmp_path, variant, kind, field):
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy)
    settings_file = copy / "settings" / "kustomization.yaml"
    text = settings_file.read_text()
    assert text.count("- WORKERS=4 ") == 1
    settings_file.write_text(text.replace("- WORKERS=4 ", "- WORKERS=7 "))  # what a user edits, and nothing else
    for docs, workers in ((render(K8S / variant), 4), (render(copy / variant), 7)):
        kinds, settings = by_kind(docs), settings_of(docs)
        assert settings["data"]["WORKERS"] == str(workers)
        worker = kinds[(kind, "locust-worker")]
        assert worker["spec"][field] == workers
        if kind == "Job":
            assert worker["spec"]["completions"] == workers
            assert env_of(kinds[("Job", "locust-master")], settings)["EXPECT_WORKERS"] == str(workers)
        assert validation_errors(docs) == []


@pytest.mark.parametrize("variant", ("headless", "ui"))
def test_workers_find_the_master_through_its_service_and_run_the_suites_image_as_its_user(variant):
    docs = render(K8S / variant)
    kinds, settings = by_kind(docs), settings_of(docs)
    service = kinds[("Service", "locust-master")]
    master = next(doc for (kind, name), doc in kinds.items() if name == "locust-master" and kind != "Service")
    worker = next(doc for (kind, name), doc in kinds.items() if name == "locust-worker")
    labels = master["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert expanded_args(worker, settings) == ["worker", "locust-master"]
    assert env_of(worker, settings)["MASTER_PORT"] == "5557" == str(service["spec"]["ports"][0]["port"])
    compose_image = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-suite"]["image"]
    for workload in (master, worker):
        assert container(workload)["image"] == compose_image  # the image docker-compose builds from the Dockerfile
        security = workload["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()


def test_the_ui_variant_serves_the_web_ui_as_a_distributed_master():
    docs = render(K8S / "ui")
    kinds, settings = by_kind(docs), settings_of(docs)
    master = kinds[("Deployment", "locust-master")]
    args = expanded_args(master, settings)
    accepted = plan(args, env={})
    assert accepted.mode == "ui" and accepted.locust_extra[:1] == ["--master"]
    assert {p["port"] for p in kinds[("Service", "locust-master")]["spec"]["ports"]} == {5557, 8089}
    assert env_of(master, settings)["WEB_HOST"] == "0.0.0.0"
    assert container(master)["readinessProbe"]["httpGet"]["port"] == "web"
