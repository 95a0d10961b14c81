"""The Kubernetes deployment files (issue 20): deploy/helm/values.yaml against the dagster/dagster chart's own JSON
schema (an excerpt transcribed from the chart, deploy/helm/dagster-chart-schema.json), the instance config the chart
renders from our values against Dagster's own instance validation, and deploy/Dockerfile's references (no docker
here: every path it copies exists, every command it and the manifests run exists, nothing secret goes in)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
SCHEMA = DEPLOY / "helm" / "dagster-chart-schema.json"
SECRET_NAMES = ("CMP_DATABASE_URL", "CMP_SMTP_USER", "CMP_SMTP_PASSWORD", "CMP_PROVIDER_SECRET", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _overrides_schema() -> dict:
    """The chart's schema for an overrides file: Helm validates the values merged with the chart's defaults, which
    supply every required key, so `required` is dropped (except in the if/then rules tying a launcher type to its
    config block); Kubernetes object $refs point at kubernetesjsonschema.dev, which is not fetched (no network)."""
    def walk(node, in_then=False):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref and not ref.startswith("#/"):
                assert ref.startswith("https://kubernetesjsonschema.dev/"), ref
            return {k: walk(v, in_then or k == "then") for k, v in node.items()
                    if not (k == "required" and not in_then) and not (k == "$ref" and not ref.startswith("#/"))}
        if isinstance(node, list):
            return [walk(v, in_then) for v in node]
        return node
    return walk(json.loads(SCHEMA.read_text()))


def _chart_errors(values: dict) -> list[str]:
    schema = _overrides_schema()
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
              for e in Draft7Validator(schema).iter_errors(values)]
    # the chart's top level takes any key (no additionalProperties): Helm would ignore a misspelt section silently
    errors += [f"{key}: not a key of the dagster chart" for key in values if key not in schema["properties"]]
    # nor does a user deployment's entry: a misspelt `envSecret` would leave the code server without its secrets
    known = schema["definitions"]["UserDeployment"]["properties"]
    for n, deployment in enumerate(values.get("dagster-user-deployments", {}).get("deployments", [])):
        errors += [f"dagster-user-deployments.deployments.{n}.{key}: not a key of a user deployment"
                   for key in deployment if key not in known]
    return errors


def test_our_values_are_valid_overrides_of_the_dagster_chart():
    assert _chart_errors(_values()) == []


@pytest.mark.parametrize("path, key", [
    ((), "dagsterDeamon"),  # misspelt section
    (("dagsterDaemon",), "runMonitor"),
    (("runLauncher", "config", "k8sRunLauncher"), "envSecret"),
    (("runLauncher", "config", "k8sRunLauncher", "runK8sConfig"), "podSpec"),
    (("dagsterWebserver",), "replicas"),
    (("runLauncher",), "image"),
    (("dagster-user-deployments", "deployments", 0), "envSecret"),
])
def test_a_key_the_chart_does_not_know_fails(path, key):
    values = _values()
    node = values
    for part in path:
        node = node[part]
    node[key] = {"x": 1}
    errors = _chart_errors(values)
    assert errors and any(key in e for e in errors), errors


def test_a_wrong_type_or_launcher_fails():
    values = _values()
    values["runLauncher"]["type"] = "CeleryK8sRunLauncher"  # its config block is not the one given
    assert any("celeryK8sRunLauncher" in e for e in _chart_errors(values))
    values = _values()
    values["dagster-user-deployments"]["deployments"][0]["port"] = "3030"
    assert any("port" in e for e in _chart_errors(values))


def _rendered_instance(values: dict) -> dict:
    """The parts of dagster.yaml the chart renders from the values we set (templates/configmap-instance.yaml and
    helpers/instance/_run-coordinator.tpl: camelCase values -> snake_case instance keys), plus
    additionalInstanceConfig merged at the top."""
    daemon, launcher = values["dagsterDaemon"], values["runLauncher"]["config"]["k8sRunLauncher"]
    monitoring = daemon["runMonitoring"]
    run_k8s = launcher["runK8sConfig"]
    return {
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"dequeue_interval_seconds":
                                       daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
                                       ["dequeueIntervalSeconds"]}},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "instance_config_map": "cmp-dagster-instance", "dagster_home": values["global"].get(
                "dagsterHome", "/opt/dagster/dagster_home"),
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "load_incluster_config": launcher["loadInclusterConfig"], "image_pull_policy": launcher["imagePullPolicy"],
            "env_config_maps": [], "env_secrets": [], "env_vars": [], "volume_mounts": [], "volumes": [],
            "run_k8s_config": {"container_config": run_k8s["containerConfig"],
                               "pod_spec_config": run_k8s["podSpecConfig"],
                               "job_spec_config": run_k8s["jobSpecConfig"]}}},
        "run_monitoring": {"enabled": monitoring["enabled"], "start_timeout_seconds": monitoring["startTimeoutSeconds"],
                           "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
                           "poll_interval_seconds": monitoring["pollIntervalSeconds"]},
        "sensors": {"use_threads": daemon["sensors"]["useThreads"], "num_workers": daemon["sensors"]["numWorkers"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        "retention": {"sensor": {"purge_after_days": values["retention"]["sensor"]["purgeAfterDays"]},
                      "schedule": {"purge_after_days": values["retention"]["schedule"]["purgeAfterDays"]}},
        **values["additionalInstanceConfig"],
    }


def test_the_instance_the_chart_renders_passes_dagsters_own_validation(tmp_path):
    """Dagster refuses `concurrency` beside a run coordinator's own run limits: ours sets pools only, and the run
    launcher's block is valid config of dagster-k8s's K8sRunLauncher (the image installs dagster-k8s)."""
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config

    rendered = _rendered_instance(_values())
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 4}
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0  # a dead run pod is re-run by recovery, once
    from dagster_k8s import K8sRunLauncher  # the image's `k8s` extra, in the dev extra too

    checked = validate_config(K8sRunLauncher.config_type(), rendered["run_launcher"]["config"])
    assert checked.success, checked.errors
    bad = copy.deepcopy(rendered)
    bad["run_coordinator"]["config"]["max_concurrent_runs"] = 8  # what setting maxConcurrentRuns would render
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(Exception, match="incompatible with the `concurrency > runs` config"):
        dagster_instance_config(str(tmp_path))


def test_the_pool_limit_is_the_same_in_the_instance_and_the_settings():
    settings = yaml.safe_load((DEPLOY / "k8s" / "cmp-settings.yaml").read_text())["data"]
    pools = _values()["additionalInstanceConfig"]["concurrency"]["pools"]
    assert int(settings["CMP_DB_POOL_LIMIT"]) == pools["default_limit"]


def test_no_secret_in_the_values_the_settings_or_the_image():
    values_text = VALUES.read_text()
    values = _values()
    assert "postgresqlPassword" not in values["postgresql"]
    settings = yaml.safe_load((DEPLOY / "k8s" / "cmp-settings.yaml").read_text())["data"]
    for name in SECRET_NAMES:
        assert name not in settings
        assert not re.search(rf"^\s*-?\s*{name}\s*[:=]", values_text, re.M), name
    assert not any(re.search(r"(?i)(password|secret|token)", key) for key in settings)
    assert "@" not in settings["CMP_FILES_URL"]  # the URL carries no credentials
    docker = (DEPLOY / "Dockerfile").read_text()
    env_lines = " ".join(_instructions(docker, "ENV"))
    for name in SECRET_NAMES + ("CMP_STRIPE",):
        assert name not in env_lines
    # the code server and every run pod read the keys from the Secret mounted where CMP_KEYS_DIR points
    deployment = values["dagster-user-deployments"]["deployments"][0]
    mounts = {m["name"]: m for m in deployment["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["volumes"]}
    assert mounts["cmp-keys"]["readOnly"] and volumes["cmp-keys"]["secret"]["secretName"] == "cmp-keys"
    assert f"CMP_KEYS_DIR={mounts['cmp-keys']['mountPath']}" in env_lines
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert {"name": "cmp-env"} in deployment["envSecrets"]


def _instructions(dockerfile: str, keyword: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [line.split(None, 1)[1] for line in joined.splitlines()
            if line.strip() and not line.startswith("#") and line.split(None, 1)[0].upper() == keyword]


def test_the_dockerfile_copies_what_exists_and_nothing_secret():
    docker = (DEPLOY / "Dockerfile").read_text()
    copies = _instructions(docker, "COPY")
    assert copies
    sources = []
    for line in copies:
        parts = [p for p in line.split() if not p.startswith("--")]
        if "--from=" in line:
            continue  # from the build stage
        sources += parts[:-1]
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
        assert not source.startswith(("data", ".", "tests", "benchmarks")), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "data" in ignored and ".venv" in ignored
    users = _instructions(docker, "USER")
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) >= 1000  # non-root
    assert "k8s" in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]


def test_the_image_and_manifest_commands_exist():
    docker = (DEPLOY / "Dockerfile").read_text()
    [cmd] = _instructions(docker, "CMD")
    argv = json.loads(cmd)
    assert argv[:3] == ["dagster", "api", "grpc"] and find_spec(argv[argv.index("-m") + 1]) is not None
    values = _values()
    grpc = values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"]
    assert find_spec(grpc[grpc.index("-m") + 1]) is not None
    from cmp_pipelines.cli import main

    commands = []
    for name in ("api.yaml", "migrate-job.yaml"):
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()):
            spec = doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "Job") else None
            if spec:
                commands += [c["command"] for c in spec["containers"]]
                for container in spec["containers"]:
                    refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
                    assert refs == {"cmp-settings", "cmp-env"}
    assert len(commands) == 2
    for command in commands:
        assert command[0] == "cmp-pipelines"
        words = [w for w in command[1:] if not w.startswith("-")][:2]
        result = CliRunner().invoke(main, [*words, "--help"])
        assert result.exit_code == 0, (command, result.output)
        options = [w for w in command[1:] if w.startswith("--")]
        for option in options:
            assert option in result.output, (command, option)


@pytest.mark.skipif(shutil.which("helm") is None or not os.environ.get("CMP_DAGSTER_CHART"),
                    reason="needs `helm` and the dagster chart (CMP_DAGSTER_CHART: a chart folder or .tgz of "
                           "dagster/dagster 1.13.x); neither Debian nor PyPI ships helm for this machine")
def test_helm_renders_the_chart_with_our_values(tmp_path):
    done = subprocess.run(["helm", "template", "cmp", os.environ["CMP_DAGSTER_CHART"], "-f", str(VALUES)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rendered = list(yaml.safe_load_all(done.stdout))
    instance = next(d for d in rendered if d and d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith(
        "-instance"))
    config = yaml.safe_load(instance["data"]["dagster.yaml"])
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["concurrency"]["pools"]["default_limit"] == 4
