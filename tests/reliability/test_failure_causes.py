"""The counts a summary shows are of the batches actually made (a full disk through the real
command line: tests/reliability/test_cli_failures.py)."""

from __future__ import annotations

from pathlib import Path

from driver_support import driver, submit
from pipeline_support import chat_lines, counters, write_input


def test_the_counts_are_of_batches_made_not_of_shards(
    emulator_factory, instance, data_root: Path
) -> None:
    """A file cancelled while its shard waited on a queue limit made no batch: its collect says
    so (the summary counts these batch ids), though the shard is accounted for."""
    emulator = emulator_factory(validation_delay=60.0)  # the first file's batch stays in flight
    write_input(data_root, "first", chat_lines(7))  # other content: not a copy of "held"
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
