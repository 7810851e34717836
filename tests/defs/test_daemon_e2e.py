"""End to end with the real Dagster daemon: `dagster dev` (webserver + daemon + code server) as a
subprocess, the emulator on loopback, files dropped into the inbox, Parquet awaited."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import polars as pl
import pytest
from pipeline_support import counters

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "inbox"
LOCATION_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
    "locationOrLoadError { __typename } } } } }"
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"dagster dev exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        if predicate():
            return
        time.sleep(1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def dagster_dev(emulator, tmp_path: Path):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (data / "inbox").mkdir(parents=True)
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BIFROST_BASE_URL": emulator.base_url,
        "BATCH_PIPELINE_DATA_ROOT": str(data),
        "BATCH_PIPELINE_AUTOSUBMIT": "1",
        "BATCH_PIPELINE_INBOX_INTERVAL": "1",
        "BATCH_PIPELINE_STATUS_INTERVAL": "1",
    }
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-w",
                "workspace.yaml",
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield {"proc": proc, "port": port, "data": data, "log": log, "home": home}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_daemon_runs_inbox_files_to_parquet(dagster_dev, emulator) -> None:
    proc, port, data, log = (
        dagster_dev["proc"],
        dagster_dev["port"],
        dagster_dev["data"],
        dagster_dev["log"],
    )

    def location_loaded() -> bool:
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/graphql", json={"query": LOCATION_QUERY}, timeout=5
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

    _wait(location_loaded, 120, "the code location to load", proc, log)
    for name in ("support_tickets.jsonl", "claude_extraction.jsonl"):
        shutil.copy(SAMPLES / name, data / "inbox" / name)

    outputs = [
        data / kind / f"input_file={name}" / "part-0.parquet"
        for kind in ("results", "errors")
        for name in ("support_tickets", "claude_extraction")
    ]
    _wait(lambda: all(p.exists() for p in outputs), 300, "both files' Parquet", proc, log)

    rows = duckdb.sql(
        f"""select input_file, count(*) filter (where t = 'r'), count(*) filter (where t = 'e'),
                   count(distinct input_line)
            from (select input_file, input_line, 'r' t from read_parquet('{data}/results/*/*.parquet', hive_partitioning=true)
                  union all
                  select input_file, input_line, 'e' t from read_parquet('{data}/errors/*/*.parquet', hive_partitioning=true))
            group by 1 order by 1"""
    ).fetchall()
    assert rows == [("claude_extraction", 23, 2, 25), ("support_tickets", 37, 3, 40)]
    errors = pl.read_parquet(f"{data}/errors/*/*.parquet")
    assert errors["stage"].unique().to_list() == ["request"]
    assert counters(emulator.base_url)["batches_created"] == 2
