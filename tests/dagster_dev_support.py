"""`dagster dev -w workspace.yaml` as a subprocess for the end-to-end tests: start, wait, stop."""

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

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
DAGSTER_DEV = (sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml")
LOCATION_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
    "locationOrLoadError { __typename } } } } }"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_env(base_env: dict[str, str], gateway_url: str, data: Path | str) -> dict[str, str]:
    """The environment the code location reads: the gateway, the data root, fast sensors on."""
    return {
        **base_env,
        "BIFROST_BASE_URL": gateway_url,
        "BATCH_PIPELINE_DATA_ROOT": str(data),
        "BATCH_PIPELINE_AUTOSUBMIT": "1",
        "BATCH_PIPELINE_INBOX_INTERVAL": "1",
        "BATCH_PIPELINE_STATUS_INTERVAL": "1",
    }


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
        """The webserver answers and the batch_pipeline location is LOADED."""
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{self.port}/graphql", json={"query": LOCATION_QUERY}, timeout=5
            )
        except httpx.HTTPError:
            return False
        entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
        return any(
            e["name"] == "batch_pipeline"
            and e["loadStatus"] == "LOADED"
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )


@contextmanager
def dagster_dev(env: dict[str, str], log: Path) -> Iterator[DagsterDev]:
    """Webserver, daemon and code server on a free port; the whole process group is stopped."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*DAGSTER_DEV, "-p", str(port), "-h", "127.0.0.1"],
            cwd=REPO,
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
