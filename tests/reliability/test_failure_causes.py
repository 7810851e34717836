"""Failures named by their cause: a full disk during collect, through the real command line, fails
at once in one line and a rerun after freeing room completes with one batch per shard; the
counts a summary shows are of the batches actually made."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from driver_support import driver, submit
from pipeline_support import chat_lines, counters, write_input
from reliability_support import assert_invariant, assert_one_batch_per_shard

FILLER = "filler"


@pytest.fixture
def full_results_disk(data_root: Path) -> Iterator[Callable[[], None]]:
    """A small tmpfs mounted at the data root's results/ and filled up (a real ENOSPC where the
    collect writes); yields the function that frees room. Always unmounted."""
    results = data_root / "results"
    results.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(results)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        filling = pytest.raises(OSError, match="No space left on device")
        with open(results / FILLER, "wb", buffering=0) as filler, filling:
            while True:
                filler.write(b"\0" * 65536)
        yield lambda: (results / FILLER).unlink()
    finally:
        subprocess.run(["umount", str(results)], check=True)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


def test_a_full_disk_during_collect_names_itself_and_a_rerun_completes(
    emulator, data_root: Path, tmp_path: Path, full_results_disk: Callable[[], None]
) -> None:
    path = write_input(data_root, "tix", chat_lines(8))
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    argv = ["run", str(path), "--gateway", emulator.base_url, "--data-dir", str(data_root)]
    argv += ["--poll-interval", "0.2"]

    first = _cli(*argv, env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    (line,) = [x for x in first.stdout.splitlines() if x.startswith("tix ")]
    assert "no space left on device while writing results of tix" in line, line
    assert line.endswith("free room and rerun"), line
    assert line.split()[1] == "1"  # the batch the gateway holds is counted, though not collected
    assert "max_retries" not in first.stdout + first.stderr
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        (failed,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert failed.job_name.endswith("_collect")
        retried = instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert retried == []  # a full disk is not retried blindly

    full_results_disk()
    second = _cli(*argv, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    (line,) = [x for x in second.stdout.splitlines() if x.startswith("tix ")]
    assert line.split()[1:3] == ["1", "8"], line
    assert_one_batch_per_shard(emulator.base_url, data_root, ["tix"])
    assert_invariant(data_root, "tix", 8)


def test_the_counts_are_of_batches_made_not_of_shards(
    emulator_factory, instance, data_root: Path
) -> None:
    """A file cancelled while its shard waited on a queue limit made no batch: its collect says
    so (the summary counts these batch ids), though the shard is accounted for."""
    emulator = emulator_factory(validation_delay=60.0)  # the first file's batch stays in flight
    write_input(data_root, "first", chat_lines(8))
    write_input(data_root, "held", chat_lines(8))
    cap = {"submit": {"max_enqueued_tokens": {"openai/gpt-4o-mini": 500}}}
    drive = driver(instance, emulator.base_url, data_root, cap)
    assert submit(drive, "first") is None
    assert submit(drive, "held") is None
    assert counters(emulator.base_url)["batches_created"] == 1  # held back by the cap
    assert drive.execute(drive.names.cancel_job, "held").success
    collected = drive.execute(drive.names.collect_job, "held")
    assert collected.success, collected.message
    results = collected.materializations[drive.names.batch_results.to_user_string()]
    assert results["batch_ids"] == []
    errors = collected.materializations[drive.names.batch_errors.to_user_string()]
    assert errors["errors_by_stage"] == {"canceled": 8}
