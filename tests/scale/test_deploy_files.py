"""The deployment files in deploy/ agree with the code and with each other, and the image's
command loads the code location from exactly the files the Dockerfile copies."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster_dev_support import free_port

from batch_pipeline import PipelineSettings

# The pool a pipeline's gateway steps use unless its settings name another.
POOL = PipelineSettings(name="any").gateway.pool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
INSTANCE_YAML = DEPLOY / "dagster.yaml"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKER_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip
# Top-level keys of the official chart's values (dagster 1.13); anything else is a typo.
CHART_KEYS = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox",
    "migrate", "telemetry", "serviceAccount", "global", "retention", "additionalInstanceConfig",
    "concurrency",
}  # fmt: skip
DAGSTER = [sys.executable, "-m", "dagster"]
PG_ENV = {
    "hostname": "DAGSTER_PG_HOST",
    "port": "DAGSTER_PG_PORT",
    "db_name": "DAGSTER_PG_DB",
    "username": "DAGSTER_PG_USER",
    "password": "DAGSTER_PG_PASSWORD",
}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, `\\` continuations joined."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _args(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def _exec_form(args: str) -> list[str]:
    return json.loads(args)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def instance() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE_YAML.read_text())


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _copies(dockerfile) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context."""
    copies = []
    for args in _args(dockerfile, "COPY"):
        parts = shlex.split(args)
        assert not any(p.startswith("--from") for p in parts), "multi-stage copies are not checked"
        parts = [p for p in parts if not p.startswith("--")]
        copies.append((parts[:-1], parts[-1]))
    return copies


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a\n", [("FROM", "a")]),
        ("# c\nRUN a \\\n  # inside\n  && b\n", [("RUN", "a && b")]),
        ('cmd ["x", "y"]\n', [("CMD", '["x", "y"]')]),
    ],
)
def test_parse_dockerfile(text: str, expected: list[tuple[str, str]]) -> None:
    assert parse_dockerfile(text) == expected


def test_dockerfile_uses_known_instructions_on_python_3_11(dockerfile) -> None:
    assert {kw for kw, _ in dockerfile} <= DOCKER_INSTRUCTIONS
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_dockerfile_copies_exist_and_pass_the_dockerignore(dockerfile) -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    sources = [s for srcs, _ in _copies(dockerfile) for s in srcs]
    for source in sources:
        assert (REPO / source).exists(), f"COPY source {source} is not in the repository"
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is ignored"
    # pyproject: [tool.dg] is read at load time; its readme is needed to build the wheel.
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], "batch_pipeline"} <= set(sources)


def test_dockerfile_installs_extras_that_exist(dockerfile) -> None:
    installs = [a for a in _args(dockerfile, "RUN") if "pip install" in a]
    extras = re.search(r'pip install "\.\[([a-z0-9,_-]+)\]"', installs[0])
    assert extras, "the package is installed with its extras from the build context"
    declared = PYPROJECT["project"].get("optional-dependencies", {})
    wanted = {"postgres": "dagster-postgres", "k8s": "dagster-k8s", "s3": "s3fs"}
    for extra in extras.group(1).split(","):
        assert extra in declared, f"pyproject.toml has no [{extra}] extra"
        assert any(dep.startswith(wanted[extra]) for dep in declared[extra])


@pytest.mark.slow  # starts the image's code server and validates it over gRPC: about 10 s
def test_image_command_loads_the_code_location(dockerfile, tmp_path: Path) -> None:
    """Lay out the image's files as the Dockerfile does and load the CMD's target from them."""
    (workdir,) = _args(dockerfile, "WORKDIR")
    app, site = tmp_path / "app", tmp_path / "site"
    for sources, dest in _copies(dockerfile):
        for source in sources:
            _place(
                REPO / source,
                app / os.path.relpath(dest, workdir) if dest.startswith("/") else app / dest,
                dest.endswith("/"),
            )
    # `pip install .` puts the package in site-packages, with no pyproject.toml above it.
    shutil.copytree(REPO / "batch_pipeline", site / "batch_pipeline")

    command = _exec_form(_args(dockerfile, "CMD")[-1])
    assert command[:3] == ["dagster", "code-server", "start"]
    port = str(free_port())
    server_args = [_local_arg(arg, workdir, app) for arg in command[3:]]
    server_args[server_args.index("-p") + 1] = port
    server_args[server_args.index("-h") + 1] = "127.0.0.1"
    env = {**os.environ, "PYTHONPATH": str(site)}
    log = tmp_path / "code-server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [*DAGSTER, "code-server", "start", *server_args],
            cwd=app,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_valid(port, env, server, log)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _local_arg(arg: str, workdir: str, app: Path) -> str:
    return str(app / os.path.relpath(arg, workdir)) if arg.startswith(workdir) else arg


def _wait_until_valid(port: str, env: dict[str, str], server: subprocess.Popen, log: Path) -> None:
    """Wait for the server to serve (the image's readiness probe), then validate its location."""
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, f"the code server exited:\n{log.read_text()[-3000:]}"
        probe = [*DAGSTER, "api", "grpc-health-check", "-h", "127.0.0.1", "-p", port]
        if subprocess.run(probe, env=env, capture_output=True, timeout=60).returncode == 0:
            break
        assert time.monotonic() < deadline, f"not serving after 120 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    check = subprocess.run(
        [*DAGSTER, "definitions", "validate", "--grpc-host", "127.0.0.1", "--grpc-port", port],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, f"{check.stderr[-3000:]}\n{log.read_text()[-3000:]}"


def _place(source: Path, target: Path, into_dir: bool) -> None:
    """Docker's COPY: a folder's contents go to target; a file goes into (or becomes) target."""
    if source.is_dir():
        shutil.copytree(
            source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    else:
        target = target / source.name if into_dir else target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)


def _target_args(command: list[str]) -> list[str]:
    """The code-location options (-m, -d, --location-name) of a `dagster code-server` command."""
    picked = []
    for flag in ("-m", "-d", "--location-name"):
        assert flag in command, f"the image command has no {flag}"
        picked += [flag, command[command.index(flag) + 1]]
    return picked


def test_instance_yaml_takes_every_postgres_setting_from_the_environment(instance) -> None:
    db = instance["storage"]["postgres"]["postgres_db"]
    assert {key: db[key] for key in PG_ENV} == {key: {"env": var} for key, var in PG_ENV.items()}
    assert db["scheme"] == "postgresql+psycopg2"
    assert instance["telemetry"] == {"enabled": False}


def test_instance_yaml_limits_the_gateway_pool_and_recovers_runs(instance) -> None:
    assert POOL == "bifrost_gateway"
    # only the step that calls the gateway holds a slot: validation never waits for the pool
    assert instance["concurrency"]["pools"]["granularity"] == "op"
    assert instance["concurrency"]["pools"]["default_limit"] >= 1
    assert instance["run_monitoring"]["enabled"] is True
    assert instance["run_retries"]["enabled"] is True
    assert instance["run_retries"]["max_retries"] >= 1


def test_helm_values_use_chart_keys_and_k8s_run_launcher(values) -> None:
    assert set(values) <= CHART_KEYS
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["telemetry"] == {"enabled": False}


def test_helm_code_location_matches_the_image(values, dockerfile) -> None:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    command = _exec_form(_args(dockerfile, "CMD")[-1])
    assert _target_args(deployment["codeServerArgs"]) == _target_args(command)
    assert deployment["port"] == int(_args(dockerfile, "EXPOSE")[0])


def test_helm_env_names_are_read_by_the_code_and_keys_come_from_secrets(values) -> None:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = deployment["env"]
    # run pods share no disk: the data root is a bucket, and no volume stands in for it
    assert env["BATCH_PIPELINE_DATA_ROOT"].startswith("s3://")
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert not launcher.get("volumes") and not launcher.get("volumeMounts")
    # the one volume is the chart's instance ConfigMap, read by the pool's init container only
    assert deployment["volumes"] == [
        {"name": "dagster-instance", "configMap": {"name": "dagster-instance"}}
    ]
    assert not deployment.get("volumeMounts")
    assert "BIFROST_BASE_URL" in env
    assert not [n for n in env if "API_KEY" in n or n.startswith("AWS_")], "keys come from Secrets"
    secrets = [s["name"] for s in deployment["envSecrets"]]
    assert secrets == ["bifrost-gateway", "batch-pipeline-s3"]
    package = REPO / "batch_pipeline"
    code = "\n".join(p.read_text() for p in [*package.rglob("*.py"), *package.rglob("*.yaml")])
    for name in env:
        assert name in code, f"{name} is set but nothing in batch_pipeline reads it"


def test_helm_values_hold_no_credentials(values) -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                reference = key == "secretKeyRef"  # names a Secret, holds no value
                if re.search(r"password|api_?key|secret_?key|token", key, re.I) and not reference:
                    assert not value, f"{path}{key} holds a credential; use a Secret"
                walk(value, f"{path}{key}.")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(values, "")
    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"


def test_helm_and_instance_yaml_agree_on_pools_retries_and_monitoring(values, instance) -> None:
    def snake(d: dict[str, Any]) -> dict[str, Any]:
        return {_snake(k): v for k, v in d.items()}

    assert values["concurrency"]["enabled"] is True
    assert snake(values["concurrency"]["pools"]) == instance["concurrency"]["pools"]
    daemon = values["dagsterDaemon"]
    assert snake(daemon["runRetries"]) == instance["run_retries"]
    monitoring = snake(daemon["runMonitoring"])
    assert monitoring.items() <= instance["run_monitoring"].items()


def test_helm_and_instance_yaml_agree_on_the_run_queue(values, instance) -> None:
    """Both bound the run workers alive at once and start queued runs without serial waits."""
    config = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    queued = {_snake(key): value for key, value in config.items()}
    runs = queued.pop("max_concurrent_runs")
    assert runs == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert queued == instance["run_coordinator"]["config"]


def test_helm_keeps_compute_logs_in_the_bucket_with_what_the_image_installs(values) -> None:
    """A run pod's disk dies with it: step logs go to the data root's bucket, via dagster-aws,
    which the image installs (extra `k8s`); the webserver gets the same S3 credentials."""
    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    config = logs["config"]["s3ComputeLogManager"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    data_bucket = deployment["env"]["BATCH_PIPELINE_DATA_ROOT"].removeprefix("s3://").split("/")[0]
    assert config["bucket"] == data_bucket and config["prefix"]
    assert not {"endpointUrl", "accessKeyId", "secretAccessKey"} & set(config)  # the SDK's chain
    assert values["dagsterWebserver"]["envSecrets"] == [{"name": "batch-pipeline-s3"}]
    extras = PYPROJECT["project"]["optional-dependencies"]["k8s"]
    assert any(dep.startswith("dagster-aws") for dep in extras)


def test_helm_sets_the_gateway_pool_limit_before_the_code_server_starts(values) -> None:
    """Dagster creates a pool's row lazily: the user deployment's init container writes the
    limit with the same command deploy/README.md documents, from the same image, on the same
    instance ConfigMap and Postgres password as the chart's own pods."""
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    (init,) = deployment["initContainers"]
    limit = values["concurrency"]["pools"]["defaultLimit"]
    assert init["command"] == ["dagster", "instance", "concurrency", "set", POOL, str(limit)]
    image = deployment["image"]
    assert init["image"] == f"{image['repository']}:{image['tag']}"
    env = {e["name"]: e for e in init["env"]}
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": values["global"]["postgresqlSecretName"],
        "key": "postgresql-password",
    }
    (mount,) = init["volumeMounts"]
    assert mount["mountPath"] == f"{env['DAGSTER_HOME']['value']}/dagster.yaml"
    assert mount["name"] == deployment["volumes"][0]["name"]
    readme = (DEPLOY / "README.md").read_text()
    assert " ".join(init["command"]) in readme


def test_deploy_readme_names_the_pool_the_assets_use() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert f"dagster instance concurrency set {POOL}" in readme
