"""The sensors and the schedule, evaluated through Dagster by the driver, against the emulator:
what they ask for, what they report, and that the status sensor writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from driver_support import driver, record_submitted, submit, tick_until
from pipeline_support import chat_lines, write_input

from batch_pipeline.gateway import BifrostClient
from batch_pipeline.inputs import InputOptions, ShardLimits, prepare_input
from batch_pipeline.integration import sensors
from batch_pipeline.integration.names import SUBMISSION_TAG
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.submit import submit_plan

NOWHERE = "http://127.0.0.1:9"  # a gateway the inbox sensor and schedule never call


def test_inbox_sensor_registers_new_files_once(instance, tmp_path: Path) -> None:
    write_input(tmp_path, "first", chat_lines(1))
    write_input(tmp_path, "second", chat_lines(1))
    (tmp_path / "inbox" / "First .jsonl").write_text("{}\n")  # maps onto first's key
    drive = driver(instance, NOWHERE, tmp_path)
    result = drive.evaluate(drive.names.inbox_sensor)
    assert [r.partition_key for r in result.run_requests] == ["first", "second"]
    assert [r.run_key for r in result.run_requests] == ["submit:first", "submit:second"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["first", "second"]
    assert (
        "First .jsonl: first.jsonl is already input 'first'" in json.loads(result.cursor)["told"][0]
    )
    # the inbox asset records each file as it arrives: lineage starts there
    arrived = [(e.asset_key, e.partition) for e in result.asset_events]
    assert arrived == [(drive.names.inbox, "first"), (drive.names.inbox, "second")]
    assert result.asset_events[0].metadata["path"].value == "inbox/first.jsonl"
    instance.add_dynamic_partitions(drive.names.partitions, ["first", "second"])
    again = drive.evaluate(drive.names.inbox_sensor)
    assert not again.run_requests and again.skip_message


def test_inbox_sensor_walks_a_large_inbox_in_pages(instance, tmp_path: Path, monkeypatch) -> None:
    """Each tick lists one page after the cursor; a full cycle covers every file, then wraps."""
    monkeypatch.setattr(sensors, "INBOX_PAGE", 2)
    for name in ("a", "b", "c", "d", "e"):
        write_input(tmp_path, name, chat_lines(1))
    drive = driver(instance, NOWHERE, tmp_path)
    seen = []
    for _ in range(3):
        tick = drive.evaluate(drive.names.inbox_sensor)
        seen.append([r.partition_key for r in tick.run_requests])
    assert seen == [["a", "b"], ["c", "d"], ["e"]]
    assert json.loads(tick.cursor)["after"] is None  # the next tick starts over
    instance.add_dynamic_partitions(drive.names.partitions, ["a", "b", "c", "d", "e"])
    write_input(tmp_path, "aa", chat_lines(1))  # sorts before the old cursor: still found
    tick = drive.evaluate(drive.names.inbox_sensor)
    assert [r.partition_key for r in tick.run_requests] == ["aa"]


def test_schedule_submits_what_waits_and_registers_new_files(tmp_path: Path) -> None:
    write_input(tmp_path, "nightly", chat_lines(1))
    with dg.instance_for_test() as instance:  # a schedule tick needs an instance on disk
        drive = driver(instance, NOWHERE, tmp_path)
        schedule = drive.repo.get_schedule_def(drive.names.inbox_schedule)
        with dg.build_schedule_context(
            instance=instance, resources=drive.resources, repository_def=drive.repo
        ) as context:
            requests = schedule.evaluate_tick(context).run_requests
            assert [r.partition_key for r in requests] == ["nightly"]
            assert instance.get_dynamic_partitions(drive.names.partitions) == ["nightly"]
            instance.report_runless_asset_event(
                dg.AssetMaterialization(drive.names.submitted_batches, partition="nightly")
            )
            assert schedule.evaluate_tick(context).skip_message == "nothing waiting in the inbox"


def test_status_sensor_reports_progress_requests_collect_and_writes_nothing(
    emulator_factory, instance, tmp_path: Path
) -> None:
    emulator = emulator_factory(requests_per_second=20.0, chunk_size=1)
    write_input(tmp_path, "job", chat_lines(10))
    drive = driver(instance, emulator.base_url, tmp_path)
    assert submit(drive, "job") is None
    manifest = tmp_path / "batches" / "job.json"
    written = manifest.read_bytes()
    observed, requests = [], []
    for _ in range(200):
        answer = drive.evaluate(drive.names.status_sensor)
        observed += answer.asset_events
        if answer.run_requests:
            requests = answer.run_requests
            break
        assert manifest.read_bytes() == written  # a tick reads; runs write
    submission = str(drive.submission("job"))
    assert [(r.partition_key, r.run_key, r.tags[SUBMISSION_TAG]) for r in requests] == [
        ("job", f"collect:job:{submission}:0", submission)
    ]
    assert not list((tmp_path / "batches").glob(".settled*"))
    assert observed and all(o.asset_key == drive.names.submitted_batches for o in observed)
    # numbers Dagster plots over time, and a line a person reads
    last = {k: v.value for k, v in observed[-1].metadata.items()}
    assert (last["requests_total"], last["batches_total"], last["batches_finished"]) == (10, 1, 1)
    assert last["requests_succeeded"] == 10 and last["statuses"] == {"completed": 1}
    assert "1 of 1 batch(es) finished" in last["summary"]
    succeeded = [o.metadata["requests_succeeded"].value for o in observed]
    assert succeeded == sorted(succeeded) and len(set(succeeded)) > 1  # reported as it grew
    # the collect run reads the status again and records it: now the manifest says so
    collected = drive.tick(drive.names.status_sensor).runs
    assert [(r.job_name, r.success) for r in collected] == [(drive.names.collect_job, True)]
    assert ManifestStore(tmp_path / "batches").load("job").all_terminal
    assert drive.evaluate(drive.names.status_sensor).skip_message  # collected: not watched


def test_failed_collect_is_requested_again(emulator_factory, instance, tmp_path: Path) -> None:
    emulator = emulator_factory(validation_delay=30.0)  # stays in flight for the test
    write_input(tmp_path, "late", chat_lines(3))
    drive = driver(instance, emulator.base_url, tmp_path)
    assert submit(drive, "late") is None
    submission = str(drive.submission("late"))
    # a collect launched too early fails (its batch is not finished) ...
    early = drive.execute(drive.names.collect_job, "late", tags={SUBMISSION_TAG: submission})
    assert not early.success and "not finished yet" in early.message
    # ... and once the batch is terminal the sensor asks again, under a new run key
    httpx_patch = {"validation_delay": 0, "requests_per_second": 1000.0}
    import httpx

    httpx.patch(f"{emulator.base_url}/_emulator/config", json=httpx_patch).raise_for_status()
    done = tick_until(drive, lambda t: bool(t.runs))
    assert [r.job_name for r in done.runs] == [drive.names.collect_job]
    key = instance.get_run_by_id(done.runs[0].run_id).tags["dagster/run_key"]
    assert key == f"collect:late:{submission}:1" and done.runs[0].success


def test_status_sensor_work_is_bounded_and_round_robin(
    emulator_factory, instance, tmp_path: Path
) -> None:
    emulator = emulator_factory(validation_delay=60.0)  # every batch stays in flight
    write_input(tmp_path, "wide", chat_lines(20))
    layout = DataLayout.at(tmp_path)
    limits = {"openai": ShardLimits(max_requests=1, max_bytes=10**6, max_bytes_per_request=10**5)}
    plan = prepare_input(
        layout.input_file("wide"), layout.staging("wide"), InputOptions(limits=limits)
    )
    with BifrostClient(emulator.base_url) as client:
        submit_plan(client, ManifestStore(layout.root / "batches"), plan)
    assert len(plan.shards) == 20
    drive = driver(instance, emulator.base_url, tmp_path, {"sensors": {"max_polls_per_tick": 7}})
    record_submitted(drive, ["wide"])
    offsets, known = [], []
    for _ in range(3):
        cursor = sensors.StatusCursor.parse(drive.evaluate(drive.names.status_sensor).cursor)
        offsets.append(cursor.offset)
        known.append(len(cursor.states))
    assert offsets == [7, 14, 1]  # 20 batches, 7 a tick, wrapping around
    assert known == [7, 14, 20]  # every batch was reached within three ticks
