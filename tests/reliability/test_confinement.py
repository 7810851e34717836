"""Confinement: no partition key or inbox entry makes the pipeline read or write outside the data
root. Crafted keys are refused by every asset before any path is touched; symlinks out of the
inbox are refused, symlinks within the data root followed; odd inbox entries never crash the
inbox sensor and never hang a run."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import dagster as dg
import pytest
from driver_support import driver, submit
from inputs_corpus import jsonl, openai_line
from pipeline_support import chat_lines, write_input
from reliability_support import counters

from batch_pipeline.gateway import BifrostClient
from batch_pipeline.ledger.layout import DataLayout, LayoutError
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.collect import collect_partition

CRAFTED_KEYS = [
    "../victim",
    "../../victim",
    "/etc/passwd",
    "inbox/../../victim",
    "a/b",
    "..",
    ".",
    "%2e%2e%2fvictim",
    "victim\n",
    "victim\x00",
    "x" * 300,
]


def _tree(root: Path, skip: set[Path]) -> dict[str, float]:
    """Every path under root (outside `skip`) with its mtime: a cheap before/after picture."""
    found = {}
    for path in root.rglob("*"):
        if not any(path == s or s in path.parents for s in skip):
            found[str(path)] = path.lstat().st_mtime
    return found


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A valid input file just outside the data root: what a traversal would reach."""
    return write_input(tmp_path, "victim", chat_lines(2)).rename(tmp_path / "victim.jsonl")


@pytest.mark.parametrize("key", CRAFTED_KEYS, ids=repr)
def test_crafted_partition_keys_are_refused_before_any_path_is_touched(
    emulator, instance, data_root: Path, tmp_path: Path, victim: Path, key: str
) -> None:
    """Through the submit assets (batch_input + submitted_batches) and the collect step."""
    skip = {data_root, tmp_path / "dagster_home", Path(emulator.state_dir)}
    before = _tree(tmp_path, skip)
    message = submit(driver(instance, emulator.base_url, data_root), key)
    assert message is not None and "\n" not in message and "rename the file" in message, message
    layout = DataLayout.at(data_root)
    with (
        BifrostClient(emulator.base_url) as client,
        pytest.raises(LayoutError, match="rename the file"),
    ):
        collect_partition(client, layout, ManifestStore(layout.root / "batches"), key)
    assert _tree(tmp_path, skip) == before  # nothing outside the data root was written
    outside = [p for p in data_root.rglob("*") if not p.resolve().is_relative_to(data_root)]
    assert outside == []
    seen = counters(emulator.base_url)
    assert (seen["files_uploaded"], seen["batches_created"]) == (0, 0)


def test_collect_asset_refuses_a_crafted_key_at_once_in_one_line(
    emulator, instance, data_root: Path, victim: Path
) -> None:
    drive = driver(instance, emulator.base_url, data_root)
    outcome = drive.execute(drive.names.collect_job, "../victim")
    message = outcome.message
    assert not outcome.success and "rename the file" in message and "\n" not in message, message
    retried = instance.get_records_for_run(
        outcome.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
    ).records
    assert retried == []  # a refused name is final: the retry policy is not spent on it


def _inbox_tick(instance, data_root: Path):
    drive = driver(instance, "http://127.0.0.1:9", data_root)
    return drive.evaluate(drive.names.inbox_sensor)


def test_symlink_out_of_the_data_root_is_refused(
    emulator, instance, data_root: Path, victim: Path
) -> None:
    os.symlink(victim, data_root / "inbox" / "escape.jsonl")
    tick = _inbox_tick(instance, data_root)
    assert tick.run_requests == []  # the sensor looks where it leads, and warns
    assert any("links outside the data root" in w for w in json.loads(tick.cursor)["told"])
    # registered by hand anyway: the asset refuses it too, before anything is uploaded
    message = submit(driver(instance, emulator.base_url, data_root), "escape")
    assert message is not None and "links outside the data root" in message, message
    assert counters(emulator.base_url)["files_uploaded"] == 0


def test_symlink_within_the_data_root_is_followed(emulator, instance, data_root: Path) -> None:
    shared = data_root / "shared" / "kept.jsonl"
    shared.parent.mkdir()
    shared.write_bytes(jsonl(openai_line("a"), openai_line("b")))
    os.symlink(shared, data_root / "inbox" / "linked.jsonl")
    assert submit(driver(instance, emulator.base_url, data_root), "linked") is None
    assert counters(emulator.base_url)["batches_created"] == 1


def test_inbox_sensor_survives_a_dangling_symlink(instance, data_root: Path) -> None:
    os.symlink(data_root / "gone.jsonl", data_root / "inbox" / "dangling.jsonl")
    write_input(data_root, "fine", chat_lines(1))
    answer = _inbox_tick(instance, data_root)
    assert [r.partition_key for r in answer.run_requests] == ["fine"]
    assert any("dangling.jsonl" in w for w in json.loads(answer.cursor)["told"])  # warned, once


def _submit_with_deadline(drive, name: str, fifo: Path | None) -> str | None:
    """Submit in a thread; a run still blocked after 8 s fails the test (a FIFO is then
    opened for writing so the blocked reader sees end-of-file and the thread ends)."""
    outcome: dict[str, str | None] = {}
    worker = threading.Thread(target=lambda: outcome.update(m=submit(drive, name)))
    worker.start()
    worker.join(8)
    if worker.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(30)
        pytest.fail(f"{name}: the run hung reading the inbox entry")
    return outcome["m"]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_inbox_entries_that_are_not_files_are_refused(
    emulator, instance, data_root: Path, kind: str
) -> None:
    entry = data_root / "inbox" / f"odd_{kind}.jsonl"
    if kind == "directory":
        entry.mkdir()
    else:
        os.mkfifo(entry)
    message = _submit_with_deadline(
        driver(instance, emulator.base_url, data_root),
        entry.stem,
        entry if kind == "fifo" else None,
    )
    assert message is not None and "not a regular file" in message, message
