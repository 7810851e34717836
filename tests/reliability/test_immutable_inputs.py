"""Inputs stay what was taken, through the real `batch-pipeline run`: new content under a used
name is refused in one line before the inbox is touched, the same content under the same name
is a no-op, a copy under a new name creates no batch unless resubmitted, names users have get
safe keys; with `on_name_reuse: version` new content becomes the name's next version; retry
waves read the registered copy, not whatever the inbox holds now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from driver_support import driver, tick_until
from pipeline_support import chat_lines, write_input
from reliability_support import counters

from batch_pipeline.integration.assets import INVARIANT_CHECK
from batch_pipeline.integration.driver import Tick
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.registry import InputRegistry

CLI = Path(sys.executable).with_name("batch-pipeline")


def _run(
    source: Path | list[Path], data_root: Path, gateway: str, *extra: str
) -> subprocess.CompletedProcess:
    """`batch-pipeline run` in a subprocess, as a user types it (no $DAGSTER_HOME)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIFROST_API_KEY")}
    sources = [str(p) for p in (source if isinstance(source, list) else [source])]
    command = [str(CLI), "run", *sources, "--gateway", gateway, "--data-dir", str(data_root)]
    return subprocess.run(
        [*command, "--poll-interval", "0.1", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _lines(path: Path, n: int, **kwargs: Any) -> Path:
    """`n` chat requests written to `path` (a file outside the data root, as a user has it)."""
    path.write_text("".join(json.dumps(line) + "\n" for line in chat_lines(n, **kwargs)))
    return path


def _error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("batch-pipeline run:")]
    return line


def test_name_reuse_keeps_the_original_and_says_so_in_one_line(
    emulator, data_root: Path, tmp_path: Path
) -> None:
    source = _lines(tmp_path / "tix.jsonl", 3)
    original = source.read_bytes()
    assert _run(source, data_root, emulator.base_url).returncode == 0
    created = counters(emulator.base_url)["batches_created"]
    results = pq.read_table(data_root / "results" / "input_file=tix" / "part-0.parquet")

    _lines(tmp_path / "tix.jsonl", 4)  # new content under the same name
    line = _error_line(_run(source, data_root, emulator.base_url))
    assert "tix.jsonl: new content under the used name 'tix'" in line
    assert "the original is kept in inputs/" in line and "new file name" in line
    # decided before the inbox was touched: the original is still there, and registered
    assert (data_root / "inbox" / "tix.jsonl").read_bytes() == original
    assert InputRegistry(DataLayout.at(data_root)).source("tix").read_bytes() == original
    assert counters(emulator.base_url)["batches_created"] == created
    after = pq.read_table(data_root / "results" / "input_file=tix" / "part-0.parquet")
    assert after.num_rows == results.num_rows == 3


def test_the_same_content_under_the_same_name_is_a_no_op(
    emulator, data_root: Path, tmp_path: Path
) -> None:
    source = _lines(tmp_path / "tix.jsonl", 3)
    assert _run(source, data_root, emulator.base_url).returncode == 0
    inbox_file = data_root / "inbox" / "tix.jsonl"
    before = (counters(emulator.base_url), inbox_file.stat().st_mtime_ns)
    os.utime(source)  # touched, same bytes
    assert _run(source, data_root, emulator.base_url).returncode == 0
    seen = counters(emulator.base_url)
    assert (seen["files_uploaded"], seen["batches_created"]) == (
        before[0]["files_uploaded"],
        before[0]["batches_created"],
    )
    assert inbox_file.stat().st_mtime_ns == before[1]  # not copied over again


def test_a_copy_under_a_new_name_creates_no_batch_unless_resubmitted(
    emulator, data_root: Path, tmp_path: Path
) -> None:
    source = _lines(tmp_path / "tix.jsonl", 3)
    assert _run(source, data_root, emulator.base_url).returncode == 0
    created = counters(emulator.base_url)["batches_created"]
    copy = tmp_path / "tix_copy.jsonl"
    copy.write_bytes(source.read_bytes())

    line = _error_line(_run(copy, data_root, emulator.base_url))
    assert "tix_copy.jsonl: same content as tix.jsonl (input 'tix'" in line
    assert "its results are in results/input_file=tix" in line
    assert counters(emulator.base_url)["batches_created"] == created
    assert not (data_root / "inbox" / "tix_copy.jsonl").exists()

    assert _run(copy, data_root, emulator.base_url, "--resubmit").returncode == 0
    assert counters(emulator.base_url)["batches_created"] == created + 1
    assert (data_root / "results" / "input_file=tix_copy" / "part-0.parquet").exists()


def test_names_users_have_become_safe_keys_through_the_cli(
    emulator, data_root: Path, tmp_path: Path
) -> None:
    sources = [
        _lines(tmp_path / "Q3 tickets.jsonl", 2),
        _lines(tmp_path / "café.jsonl", 3),
        _lines(tmp_path / "a=b.jsonl", 4),
    ]
    done = _run(sources, data_root, emulator.base_url)
    assert done.returncode == 0, done.stdout + done.stderr
    for key, rows in (("q3_tickets", 2), ("cafe", 3), ("a_b", 4)):
        table = pq.read_table(data_root / "results" / f"input_file={key}" / "part-0.parquet")
        assert table.num_rows == rows
    registry = InputRegistry(DataLayout.at(data_root))
    assert registry.record("q3_tickets").file == "Q3 tickets.jsonl"  # type: ignore[union-attr]
    assert registry.record("cafe").file == "café.jsonl"  # type: ignore[union-attr]


def test_two_names_for_one_key_are_refused_clearly(
    emulator, data_root: Path, tmp_path: Path
) -> None:
    assert (
        _run(_lines(tmp_path / "Q3 tickets.jsonl", 2), data_root, emulator.base_url).returncode == 0
    )
    other = _lines(tmp_path / "q3  tickets.jsonl", 3)
    line = _error_line(_run(other, data_root, emulator.base_url))
    assert (
        "q3  tickets.jsonl: maps to input key 'q3_tickets', which Q3 tickets.jsonl already "
        "holds; rename the file" in line
    )


def test_new_content_under_a_used_name_becomes_its_next_version_when_configured(
    emulator, instance, data_root: Path, tmp_path: Path
) -> None:
    drive = driver(
        instance,
        emulator.base_url,
        data_root,
        {"inputs": {"settle_seconds": 0, "on_name_reuse": "version"}},
    )
    source = _lines(tmp_path / "tix.jsonl", 3)
    original = source.read_bytes()
    assert drive.run([source], progress=lambda _: None).ok
    _lines(tmp_path / "tix.jsonl", 5)
    summary = drive.run([source], progress=lambda _: None)
    assert summary.ok and [f.name for f in summary.files] == ["tix.v2"]
    assert (summary.files[0].results, summary.files[0].errors) == (5, 0)
    registry = InputRegistry(DataLayout.at(data_root))
    assert registry.source("tix").read_bytes() == original  # the original content is kept
    version = registry.record("tix.v2")
    assert version is not None and (version.version, version.previous) == (2, "tix")
    (event,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=drive.names.batch_input, asset_partitions=["tix.v2"]),
        limit=1,
    ).records
    metadata = event.asset_materialization.metadata
    assert metadata["previous_version"].value == "tix"
    assert metadata["original_file"].value == "tix.jsonl"
    # the same new content again is a no-op: no third version
    assert [f.name for f in drive.run([source], progress=lambda _: None).files] == ["tix.v2"]


def test_a_retry_wave_reads_the_registered_copy_not_the_inbox(
    emulator, instance, data_root: Path
) -> None:
    drive = driver(instance, emulator.base_url, data_root)
    path = write_input(data_root, "flaky", chat_lines(4, fail={2: 500, 4: 503}))
    original = path.read_bytes().splitlines(keepends=True)
    assert drive.run([path], progress=lambda _: None).files[0].errors == 2
    path.write_text("replaced in the inbox afterwards\n")
    run = drive.execute(drive.names.retry_job, "flaky")
    assert run.success, run.message
    wave = (data_root / "inbox" / "flaky.retry-1.jsonl").read_bytes()
    assert wave == original[1] + original[3]


def test_a_file_that_grew_after_it_was_taken_fails_the_blocking_check_in_one_line(
    emulator, instance, data_root: Path
) -> None:
    """A producer that paused at a line boundary longer than the quiet period: its file was
    taken in part, which no listing can tell; the collect compares the inbox file with what was
    registered and fails loudly instead of passing on the lines it saw."""
    drive = driver(instance, emulator.base_url, data_root)
    path = write_input(data_root, "grows", chat_lines(3))
    taken = drive.tick(drive.names.inbox_sensor)
    assert [(r.partition, r.success) for r in taken.runs] == [("grows", True)]
    with path.open("a") as out:  # the producer goes on writing
        out.write("".join(json.dumps(line) + "\n" for line in chat_lines(5)[3:]))
    outcomes: dict[str, dg.AssetCheckEvaluation] = {}

    def collected(tick: Tick) -> bool:
        for run in tick.runs:
            if run.job_name == drive.names.collect_job:
                for record in instance.get_records_for_run(run.run_id).records:
                    event = record.event_log_entry.dagster_event
                    if (
                        event is not None
                        and event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
                    ):
                        evaluation = event.asset_check_evaluation_data
                        outcomes[evaluation.check_name] = evaluation
        return INVARIANT_CHECK in outcomes

    tick_until(drive, collected, timeout=60)
    check = outcomes[INVARIANT_CHECK]
    assert not check.passed
    size = len(InputRegistry(DataLayout.at(data_root)).source("grows").read_bytes())
    assert check.description == (
        f"grows.jsonl grew after it was taken ({size} -> {path.stat().st_size} bytes): only the "
        f"{size} bytes taken were submitted; put the rest under a new file name"
    )
    assert not (data_root / "outcomes" / "original_file=grows").exists()  # blocked downstream


def test_the_inbox_sensor_takes_new_content_under_a_used_name_as_its_next_version(
    emulator, instance, data_root: Path
) -> None:
    drive = driver(
        instance,
        emulator.base_url,
        data_root,
        {"inputs": {"settle_seconds": 0, "on_name_reuse": "version"}},
    )
    path = write_input(data_root, "tix", chat_lines(3))
    original = path.read_bytes()
    first = drive.tick(drive.names.inbox_sensor)
    assert [(r.partition, r.success) for r in first.runs] == [("tix", True)]
    assert drive.tick(drive.names.inbox_sensor).runs == []  # nothing new: nothing asked
    write_input(data_root, "tix", chat_lines(4))
    second = drive.tick(drive.names.inbox_sensor)
    assert [(r.partition, r.success) for r in second.runs] == [("tix.v2", True)]
    (arrived,) = second.events
    assert arrived.partition == "tix.v2" and arrived.metadata["original_file"].value == "tix.jsonl"
    registry = InputRegistry(DataLayout.at(data_root))
    assert registry.source("tix").read_bytes() == original
    assert registry.source("tix.v2").read_bytes() == path.read_bytes()
    assert drive.tick(drive.names.inbox_sensor).runs == []  # the version is what the inbox holds
