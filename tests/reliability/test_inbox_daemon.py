"""The inbox under the real Dagster daemon (`dagster dev`): a file written with pauses is taken
whole, never in part; a copy of a processed file under a new name creates no batch; new content
under a used name keeps the original, moves the file to inbox/rejected/ with its reason, and
says so in one line in the sensor's log, the failed run and an observation on the inbox asset."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster_dev_support import DagsterDev, dagster_dev, user_project
from pipeline_support import chat_lines
from reliability_support import counters

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.registry import InputRegistry

pytestmark = pytest.mark.slow

QUIET_SECONDS = 2  # the instance's quiet period; the slow writer pauses longer than this
PAUSE_SECONDS = 2.5 * QUIET_SECONDS


def _jsonl(n: int, start: int = 0) -> bytes:
    lines = chat_lines(n + start)[start:]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.fixture
def dev(emulator, tmp_path: Path) -> Iterator[DagsterDev]:
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (data / "inbox").mkdir(parents=True)
    project = user_project(
        tmp_path / "project", emulator.base_url, data, inputs={"settle_seconds": QUIET_SECONDS}
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with dagster_dev(env, tmp_path / "dagster-dev.log", project) as running:
        yield running


def _write_in_bursts(path: Path, content: bytes, cuts: list[int], log: Path) -> None:
    """A producer writing `content` in bursts, pausing inside a line after each cut, longer
    than the quiet period and until the inbox sensor has seen the half-written file (its log
    says it waits for the rest) or has taken it (registered: what must not happen)."""
    start, registry = 0, InputRegistry(DataLayout.at(path.parent.parent))
    for cut in [*cuts, len(content)]:
        with open(path, "ab") as out:
            out.write(content[start:cut])
        start = cut
        if cut == len(content):
            return
        seen = f"inbox: {path.name}: ends inside a line ({cut} bytes so far)"
        paused = time.monotonic()
        while time.monotonic() < paused + 120 and registry.record("slow") is None:
            if time.monotonic() - paused > PAUSE_SECONDS and seen in log.read_text(
                errors="replace"
            ):
                break
            time.sleep(0.2)


def _rows(data: Path, key: str) -> int:
    found = 0
    for kind in ("results", "errors"):
        path = data / kind / f"input_file={key}" / "part-0.parquet"
        if path.exists():
            found += pq.read_metadata(path).num_rows
    return found


def _failures(home: Path, partition: str) -> list[str]:
    """The one-line step failures of the failed runs of a partition, from the event log."""
    messages = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(
            dg.RunsFilter(
                tags={"dagster/partition": partition}, statuses=[dg.DagsterRunStatus.FAILURE]
            )
        )
        for run in runs:
            for record in instance.get_records_for_run(run.run_id).records:
                event = record.event_log_entry.dagster_event
                if event is not None and event.is_step_failure:
                    data = event.step_failure_data.user_failure_data
                    messages.append(data.description if data else "")
    return messages


def test_the_inbox_takes_whole_files_only_and_keeps_what_it_took(
    dev: DagsterDev, emulator, tmp_path: Path
) -> None:
    data, home = tmp_path / "data", tmp_path / "dagster_home"
    inbox = data / "inbox"
    dev.wait(dev.location_loaded, 120, "the code location to load")

    original = _jsonl(10)
    (inbox / "tix.jsonl.part").write_bytes(original)
    (inbox / "tix.jsonl.part").rename(inbox / "tix.jsonl")  # a producer that renames
    slow = _jsonl(600)
    third = len(slow) // 3
    cuts = [third + 7, 2 * third + 11]
    assert all(slow[cut - 1 : cut] != b"\n" for cut in cuts)  # each pause inside a line
    writer = threading.Thread(
        target=_write_in_bursts,
        args=(inbox / "slow.jsonl", slow, cuts, tmp_path / "dagster-dev.log"),
    )
    writer.start()
    dev.wait(lambda: _rows(data, "tix") == 10, 240, "tix's results")

    (inbox / "tix_copy.jsonl").write_bytes(original)  # a copy under a new name
    changed = _jsonl(12, start=50)
    (inbox / "tix.jsonl").write_bytes(changed)  # new content under the used name
    writer.join()

    rejected = inbox / "rejected" / "tix.jsonl"
    dev.wait(lambda: _rows(data, "slow") == 600, 300, "slow.jsonl taken whole and collected")
    dev.wait(lambda: bool(_failures(home, "tix_copy")), 120, "the copy's refusal")
    dev.wait(lambda: bool(_failures(home, "tix")) and rejected.exists(), 120, "the refusal")

    # the slow file was taken once, whole: one registration of all its bytes, one batch
    registry = InputRegistry(DataLayout.at(data))
    record = registry.record("slow")
    assert record is not None and record.size == len(slow)
    assert _rows(data, "slow") == 600
    # one batch each for tix and slow; none for the copy, none for the new content under tix
    assert counters(emulator.base_url)["batches_created"] == 2

    # the copy made no batch, and said where the results of that content are
    (copy_message,) = set(_failures(home, "tix_copy"))
    assert "tix_copy.jsonl: same content as tix.jsonl (input 'tix'" in copy_message
    assert "its results are in results/input_file=tix" in copy_message
    assert "\n" not in copy_message

    # name reuse: the original is kept; the new file moved aside with its reason
    assert registry.source("tix").read_bytes() == original
    assert rejected.read_bytes() == changed and not (inbox / "tix.jsonl").exists()
    reason = (inbox / "rejected" / "tix.jsonl.reason.txt").read_text()
    (reuse_message,) = set(_failures(home, "tix"))
    assert reason == reuse_message + "\n" and "\n" not in reuse_message
    assert "tix.jsonl: new content under the used name 'tix'; the original is kept" in reason
    assert _rows(data, "tix") == 10
    log = (tmp_path / "dagster-dev.log").read_text(errors="replace")
    assert "inbox: tix.jsonl: new content under the used name 'tix'" in log
    with dg.DagsterInstance.from_config(str(home)) as instance:
        observed = instance.fetch_observations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(["e2e", "inbox"]), asset_partitions=["tix"]
            ),
            limit=10,
        ).records
    statuses = [r.asset_observation.metadata["status"].value for r in observed]
    assert statuses == ["rejected"]
