"""The sensors and the schedule evaluated directly under a test instance, against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from pipeline_support import chat_lines, write_input

from batch_pipeline.defs import sensors
from batch_pipeline.defs.assets import batch_input, collected_batches, submitted_batches
from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.defs.schedules import inbox_schedule
from batch_pipeline.defs.sensors import batch_status_sensor, inbox_sensor
from batch_pipeline.inputs import ShardLimits


def _resources(emulator, root: Path, **settings) -> dict:
    return {
        "gateway": GatewayResource(
            base_url=emulator.base_url if emulator else "http://127.0.0.1:9"
        ),
        "pipeline": PipelineSettings(data_root=str(root), inbox_settle_seconds=0, **settings),
    }


def test_inbox_sensor_registers_new_files_once(tmp_path: Path) -> None:
    write_input(tmp_path, "first", chat_lines(1))
    write_input(tmp_path, "second", chat_lines(1))
    (tmp_path / "inbox" / "bad name.jsonl").write_text("{}\n")
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=_resources(None, tmp_path))
        result = inbox_sensor(ctx)
        assert [r.partition_key for r in result.run_requests] == ["first", "second"]
        assert [r.run_key for r in result.run_requests] == ["submit:first", "submit:second"]
        assert result.dynamic_partitions_requests[0].partition_keys == ["first", "second"]
        assert "bad name" in json.loads(result.cursor)["told"][0]
        instance.add_dynamic_partitions(input_files.name, ["first", "second"])
        again = inbox_sensor(
            dg.build_sensor_context(
                instance=instance, cursor=result.cursor, resources=_resources(None, tmp_path)
            )
        )
        assert not again.run_requests and again.skip_reason


def test_inbox_sensor_walks_a_large_inbox_in_pages(tmp_path: Path, monkeypatch) -> None:
    """Each tick lists one page after the cursor; a full cycle covers every file, then wraps."""
    monkeypatch.setattr(sensors, "INBOX_PAGE", 2)
    for name in ("a", "b", "c", "d", "e"):
        write_input(tmp_path, name, chat_lines(1))
    with dg.instance_for_test() as instance:
        cursor, seen = None, []
        for _ in range(3):
            tick = inbox_sensor(
                dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources=_resources(None, tmp_path)
                )
            )
            seen.append([r.partition_key for r in tick.run_requests])
            cursor = tick.cursor
        assert seen == [["a", "b"], ["c", "d"], ["e"]]
        assert json.loads(cursor)["after"] is None  # the next tick starts over
        instance.add_dynamic_partitions(input_files.name, ["a", "b", "c", "d", "e"])
        write_input(tmp_path, "aa", chat_lines(1))  # sorts before the old cursor: still found
        tick = inbox_sensor(
            dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=_resources(None, tmp_path)
            )
        )
        assert [r.partition_key for r in tick.run_requests] == ["aa"]


def test_schedule_submits_what_waits_and_registers_new_files(tmp_path: Path) -> None:
    write_input(tmp_path, "nightly", chat_lines(1))
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, resources=_resources(None, tmp_path))
        requests = inbox_schedule(ctx)
        assert [r.partition_key for r in requests] == ["nightly"]
        assert instance.get_dynamic_partitions(input_files.name) == ["nightly"]


def _submit(instance, resources, name: str) -> None:
    instance.add_dynamic_partitions(input_files.name, [name])
    result = dg.materialize(
        [batch_input, submitted_batches], partition_key=name, instance=instance, resources=resources
    )
    assert result.success


def test_status_sensor_polls_records_progress_and_requests_collect(
    emulator_factory, tmp_path: Path
) -> None:
    emulator = emulator_factory(requests_per_second=20.0, chunk_size=1)
    write_input(tmp_path, "job", chat_lines(10))
    resources = _resources(emulator, tmp_path)
    with dg.instance_for_test() as instance:
        _submit(instance, resources, "job")
        cursor, requests, observed = None, [], []
        for _ in range(100):
            tick = batch_status_sensor(
                dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            )
            cursor = tick.cursor
            observed += tick.asset_events
            if tick.run_requests:
                requests = tick.run_requests
                break
            import time

            time.sleep(0.1)
        assert [(r.partition_key, r.run_key) for r in requests] == [("job", "collect:job:0")]
        assert observed and all(o.asset_key == dg.AssetKey("submitted_batches") for o in observed)
        statuses = [next(iter(o.metadata["batches"].value.values()))["status"] for o in observed]
        assert statuses[-1] == "completed"


def test_failed_collect_is_requested_again(emulator_factory, tmp_path: Path) -> None:
    emulator = emulator_factory(validation_delay=30.0)  # stays in flight for the test
    write_input(tmp_path, "late", chat_lines(3))
    resources = _resources(emulator, tmp_path)
    with dg.instance_for_test() as instance:
        _submit(instance, resources, "late")
        # a collect launched too early fails ...
        failed = dg.materialize(
            [collected_batches],
            partition_key="late",
            instance=instance,
            resources=resources,
            tags={"batch_pipeline/step": "collect"},
            raise_on_error=False,
        )
        assert not failed.success
        # ... and once the batch is terminal the sensor asks again, under a new run key
        from batch_pipeline.ledger.manifest import ManifestStore

        store = ManifestStore(tmp_path / "batches")
        shard = next(iter(store.load("late").shards))
        store.record("late", shard, terminal=True, status="completed")
        tick = batch_status_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert [r.run_key for r in tick.run_requests] == ["collect:late:1"]
        assert [m.input_file for m in store.active()] == ["late"]  # not settled: still watched


@pytest.mark.parametrize("per_tick", [7])
def test_status_sensor_work_is_bounded_and_round_robin(
    emulator_factory, tmp_path: Path, per_tick: int
) -> None:
    emulator = emulator_factory(validation_delay=60.0)  # every batch stays in flight
    write_input(tmp_path, "wide", chat_lines(20))
    resources = _resources(emulator, tmp_path, max_polls_per_tick=per_tick)
    resources["pipeline"] = PipelineSettings(
        data_root=str(tmp_path), inbox_settle_seconds=0, max_polls_per_tick=per_tick
    )
    from batch_pipeline.gateway import BifrostClient
    from batch_pipeline.inputs import InputOptions, prepare_input
    from batch_pipeline.ledger.layout import DataLayout
    from batch_pipeline.ledger.manifest import ManifestStore
    from batch_pipeline.operations.submit import submit_plan

    layout = DataLayout.at(tmp_path)
    plan = prepare_input(
        layout.input_file("wide"),
        layout.staging("wide"),
        InputOptions(
            limits={
                "openai": ShardLimits(max_requests=1, max_bytes=10**6, max_bytes_per_request=10**5)
            }
        ),
    )
    store = ManifestStore(tmp_path / "batches")
    with BifrostClient(emulator.base_url) as client:
        submit_plan(client, store, plan)
    assert len(plan.shards) == 20
    with dg.instance_for_test() as instance:
        cursor, offsets = None, []
        for _ in range(3):
            tick = batch_status_sensor(
                dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            )
            cursor = tick.cursor
            offsets.append(json.loads(cursor)["offset"])
        assert offsets == [7, 14, 1]  # 20 batches, 7 a tick, wrapping around
    polled = [r.polled_at for r in store.load("wide").shards.values()]
    assert all(polled)  # every batch was reached within three ticks
