"""`dagster dev` as a subprocess for the end-to-end tests, over a project as a data team writes
it (one `defs.yaml` instance of the component): write it, start, wait, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_MODULE = "their_project"
LOCATION_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
    "locationOrLoadError { __typename } } } } }"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_project(folder: Path, gateway_url: str, data: Path | str, **attributes: Any) -> Path:
    """A Dagster project with one instance `e2e` of the component over `data` and the gateway,
    its inbox sensor running and both sensors ticking every second; returns its folder."""
    package = folder / PROJECT_MODULE
    (package / "defs" / "e2e").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        f'[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "{PROJECT_MODULE}"\n'
    )
    (package / "__init__.py").touch()
    (package / "defs" / "__init__.py").touch()
    (package / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs():\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
    )
    settings = {
        "name": "e2e",
        "data_root": str(data),
        "gateway": {"base_url": gateway_url},
        "inputs": {"settle_seconds": 0},
        "sensors": {
            "inbox": {"interval_seconds": 1, "running": True},
            "status": {"interval_seconds": 1, "running": True},
        },
        **attributes,
    }
    component = {"type": "batch_pipeline.BatchPipelineComponent", "attributes": settings}
    (package / "defs" / "e2e" / "defs.yaml").write_text(yaml.safe_dump(component))
    return folder


@dataclass
class DagsterDev:
    proc: subprocess.Popen
    port: int
    log: Path

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `predicate` each second; fail with the log's tail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"dagster dev exited ({self.proc.returncode}) while waiting for {what}:\n"
                    f"{self.log.read_text()[-3000:]}"
                )
            if predicate():
                return
            time.sleep(1)
        pytest.fail(
            f"timed out after {timeout}s waiting for {what}:\n{self.log.read_text()[-3000:]}"
        )

    def location_loaded(self) -> bool:
        """The webserver answers and the project's location is LOADED."""
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{self.port}/graphql", json={"query": LOCATION_QUERY}, timeout=5
            )
        except httpx.HTTPError:
            return False
        entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
        return any(
            e["name"] == f"{PROJECT_MODULE}.definitions"
            and e["loadStatus"] == "LOADED"
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )


@contextmanager
def dagster_dev(env: dict[str, str], log: Path, project: Path) -> Iterator[DagsterDev]:
    """Webserver, daemon and code server of `project` (see `user_project`) on a free port; the
    whole process group is stopped."""
    port = free_port()
    command = [sys.executable, "-m", "dagster", "dev", "-m", f"{PROJECT_MODULE}.definitions"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "-d", str(project), "-p", str(port), "-h", "127.0.0.1"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield DagsterDev(proc, port, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
