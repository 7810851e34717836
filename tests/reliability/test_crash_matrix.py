"""Crash matrix: `batch-pipeline run` in a subprocess, SIGKILLed at each step of the flow (timed
by what the emulator and the data root show), then run again. The re-run creates no second
batch, readers never see a half-written file, and every input line ends up in exactly one row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import httpx
import pyarrow.dataset as ds
import pytest
from driver_support import cli_driver
from pipeline_support import chat_lines, write_input
from reliability_support import (
    arm,
    assert_invariant,
    assert_no_partial_files,
    assert_one_batch_per_shard,
    assert_parquet_complete,
    counters,
    visible_parquet,
)

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).with_name("batch-pipeline")
HELD = 60.0  # how long a held answer or a stalled download waits: far past the kill


def _start_run(source: Path, data_root: Path, gateway: str, tmp_path: Path) -> subprocess.Popen:
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - closed with the process below
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIFROST_API_KEY")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp_path / "tmp")  # whatever the run puts in temp files stays here
    command = [str(CLI), "run", str(source), "--gateway", gateway, "--data-dir", str(data_root)]
    process = subprocess.Popen(
        [*command, "--poll-interval", "0.1"], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    log.close()
    return process


def _kill_when(
    process: subprocess.Popen, ready: Callable[[], bool], tmp_path: Path, timeout: float = 90
) -> None:
    """SIGKILL the run as soon as `ready()` holds; fail if the run ends or takes too long."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"the run ended first ({process.returncode}):\n{_log(tmp_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the kill point never came:\n{_log(tmp_path)}")
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _log(tmp_path: Path) -> str:
    return (tmp_path / "run.log").read_text(errors="replace")[-3000:]


def _rerun_and_prove(emulator, source: Path, data_root: Path, name: str, lines: int) -> None:
    """Run again to completion as `batch-pipeline run` does (a new ephemeral instance), then
    prove: one batch per shard, whole files, every line once."""
    disarm(emulator.base_url)
    with dg.DagsterInstance.ephemeral() as instance:
        drive = cli_driver(instance, emulator.base_url, data_root)
        summary = drive.run([source], poll_interval=0.1, progress=lambda _: None)
    assert summary.ok, summary.render()
    assert_one_batch_per_shard(emulator.base_url, data_root, [name])
    assert_invariant(data_root, name, lines)
    assert_parquet_complete(data_root, name)
    assert_no_partial_files(data_root)


def disarm(base_url: str) -> None:
    """Disarm the faults that timed the kill."""
    httpx.delete(f"{base_url}/_emulator/faults", timeout=10).raise_for_status()


def _record(data_root: Path, name: str):
    manifest = ManifestStore(DataLayout.at(data_root).root / "batches").load(name)
    return None if manifest is None else next(iter(manifest.shards.values()))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The input file handed to `batch-pipeline run` (copied into the inbox by the run)."""
    return write_input(tmp_path / "outside", "crash", chat_lines(10, fail={4: 500}))


def test_killed_after_upload_before_create(emulator, source, data_root, tmp_path) -> None:
    arm(emulator.base_url, kind="slow_answer", routes=["file_upload"], delay=HELD)
    run = _start_run(source, data_root, emulator.base_url, tmp_path)
    _kill_when(run, lambda: counters(emulator.base_url)["files_uploaded"] == 1, tmp_path)
    record = _record(data_root, "crash")
    assert record is not None and record.input_file_id is None and record.batch_id is None
    assert counters(emulator.base_url)["batches_created"] == 0
    _rerun_and_prove(emulator, source, data_root, "crash", 10)
    assert counters(emulator.base_url)["files_uploaded"] == 2  # the first upload is orphaned


def test_killed_right_after_create_before_the_manifest_write(
    emulator, source, data_root, tmp_path
) -> None:
    arm(emulator.base_url, kind="slow_answer", routes=["batch_create"], delay=HELD)
    run = _start_run(source, data_root, emulator.base_url, tmp_path)
    _kill_when(run, lambda: counters(emulator.base_url)["batches_created"] == 1, tmp_path)
    record = _record(data_root, "crash")
    assert record.state == "creating" and record.batch_id is None  # the intent, no id
    _rerun_and_prove(emulator, source, data_root, "crash", 10)


def test_killed_during_the_result_download(emulator, source, data_root, tmp_path) -> None:
    arm(
        emulator.base_url,
        kind="stall_download",
        routes=["file_content"],
        after_bytes=300,
        delay=HELD,
    )
    downloads = data_root / "staging" / "crash" / "downloads"

    def mid_download() -> bool:  # the first 300 bytes are in; the rest will not come
        fired = counters(emulator.base_url)["faults_fired"].get("stall_download", 0)
        return fired >= 1 and any(downloads.glob(".*.part"))

    run = _start_run(source, data_root, emulator.base_url, tmp_path)
    _kill_when(run, mid_download, tmp_path)
    assert visible_parquet(data_root) == []
    assert_no_partial_files(data_root)
    _rerun_and_prove(emulator, source, data_root, "crash", 10)


def test_killed_during_the_parquet_write(emulator_factory, data_root, tmp_path) -> None:
    """12,000 requests: the output file fills a first row group of the results temp file, then
    the error file's download stalls with the writer open; the kill lands mid-write."""
    emulator = emulator_factory(requests_per_second=1e6, chunk_size=100_000)
    lines = chat_lines(12_000, fail={7: 500, 11_999: 429})
    source = write_input(tmp_path / "outside", "big", lines)
    arm(
        emulator.base_url,
        kind="stall_download",
        routes=["file_content"],
        skip=1,  # the output file comes whole; the error file stalls
        after_bytes=100,
        delay=HELD,
    )
    partition = data_root / "results" / "input_file=big"

    def mid_write() -> bool:
        fired = counters(emulator.base_url)["faults_fired"].get("stall_download", 0)
        temp = list(partition.glob(".*.tmp"))
        return fired >= 1 and bool(temp) and temp[0].stat().st_size > 100_000

    run = _start_run(source, data_root, emulator.base_url, tmp_path)
    _kill_when(run, mid_write, tmp_path, timeout=120)
    assert visible_parquet(data_root) == []  # the half-written table is a hidden temp file
    assert_no_partial_files(data_root)
    dataset = ds.dataset(data_root / "results", format="parquet", partitioning="hive")
    assert dataset.count_rows() == 0  # dataset readers skip the hidden temp file too
    _rerun_and_prove(emulator, source, data_root, "big", 12_000)
