"""Operating batches through the emulator and the pipeline: retry waves and outcomes, budgets,
queue limits, cancel, alert checks and cleanup."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from pipeline_support import chat_lines, counters, write_input

from batch_pipeline.cli.run import run_files
from batch_pipeline.defs.assets import batch_input, collected_batches, submitted_batches
from batch_pipeline.defs.checks import RETENTION_CHECK, STUCK_CHECK
from batch_pipeline.defs.jobs import cancel_job, retry_job
from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.defs.sensors import batch_status_sensor
from batch_pipeline.gateway import BifrostClient, NotFoundError
from batch_pipeline.ledger.manifest import ManifestStore

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _resources(emulator, root: Path, **settings) -> dict:
    return {
        "gateway": GatewayResource(base_url=emulator.base_url),
        "pipeline": PipelineSettings(data_root=str(root), inbox_settle_seconds=0, **settings),
    }


def _submit(instance, resources, name: str, **kwargs) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition(input_files.name, name):
        instance.add_dynamic_partitions(input_files.name, [name])
    return dg.materialize(
        [batch_input, submitted_batches],
        partition_key=name,
        instance=instance,
        resources=resources,
        run_config=QUIET,
        **kwargs,
    )


def _tick_until(instance, resources, predicate, timeout: float = 30.0, cursor=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick = batch_status_sensor(
            dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        )
        cursor = tick.cursor
        if predicate(tick):
            return tick
        time.sleep(0.1)
    raise AssertionError("the status sensor never got there")


def test_retry_wave_then_outcomes(emulator_factory, tmp_path: Path) -> None:
    emulator = emulator_factory(
        requests_per_second=4.0, completion_window_seconds=1.5, chunk_size=1
    )
    write_input(tmp_path, "wave", chat_lines(12, fail={2: 400, 3: 500}))
    first = run_files(
        [tmp_path / "inbox" / "wave.jsonl"],
        gateway_url=emulator.base_url,
        data_dir=tmp_path,
        poll_interval=0.1,
        progress=lambda _: None,
    )
    assert first.ok
    errors = duckdb.sql(
        f"select input_line, stage, retryable from read_parquet('{tmp_path}/errors/*/*.parquet') order by 1"
    ).fetchall()
    retryable = [line for line, _, ok in errors if ok]
    assert (2, "request", False) in errors and 2 not in retryable  # a 400 is not retried
    assert any(stage == "expired" for _, stage, _ in errors)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(input_files.name, ["wave"])
        result = retry_job.execute_in_process(
            partition_key="wave",
            instance=instance,
            resources={"pipeline": PipelineSettings(data_root=str(tmp_path))},
            run_config=QUIET,
        )
        assert result.success
    retry_file = tmp_path / "inbox" / "wave.retry-1.jsonl"
    original_lines = (tmp_path / "inbox" / "wave.jsonl").read_text().splitlines()
    assert retry_file.read_text().splitlines() == [original_lines[n - 1] for n in retryable]

    httpx.patch(
        f"{emulator.base_url}/_emulator/config", json={"requests_per_second": 500.0}
    ).raise_for_status()
    second = run_files(
        [retry_file],
        gateway_url=emulator.base_url,
        data_dir=tmp_path,
        poll_interval=0.1,
        progress=lambda _: None,
    )
    assert second.ok
    rows = duckdb.sql(
        f"select custom_id, outcome, attempt, input_file from read_parquet('{tmp_path}/outcomes/*/*.parquet', hive_partitioning=true) order by 1"
    ).fetchall()
    assert len(rows) == 12 and len({r[0] for r in rows}) == 12
    by_id = {r[0]: r for r in rows}
    assert by_id["req-0002"][1:] == ("failed", 1, "wave")  # not retried: its first error stands
    assert all(
        by_id[f"req-{n:04d}"][1:] == ("succeeded", 2, "wave.retry-1") for n in retryable if n != 3
    )
    retried_rows = duckdb.sql(
        f"select distinct original_file, attempt from read_parquet('{tmp_path}/results/input_file=wave.retry-1/*.parquet')"
    ).fetchall()
    assert retried_rows == [("wave", 2)]


def test_budget_too_small_blocks_submission(emulator, tmp_path: Path) -> None:
    write_input(tmp_path, "pricey", chat_lines(5))
    with dg.instance_for_test() as instance:
        result = _submit(
            instance,
            _resources(emulator, tmp_path, max_cost_per_file_usd=1e-7),
            "pricey",
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert (
            "exceeds the per-file budget" in failure.step_failure_data.user_failure_data.description
        )
    assert counters(emulator.base_url)["batches_created"] == 0


def test_enqueued_token_cap_holds_shards_until_earlier_batches_finish(
    emulator_factory, tmp_path: Path
) -> None:
    emulator = emulator_factory(requests_per_second=10.0, chunk_size=1)
    write_input(tmp_path, "first", chat_lines(8))
    write_input(tmp_path, "second", chat_lines(8))
    resources = _resources(emulator, tmp_path, max_enqueued_tokens={"openai/gpt-4o-mini": 500})
    store = ManifestStore(tmp_path / "batches")
    with dg.instance_for_test() as instance:
        assert _submit(instance, resources, "first").success
        assert _submit(instance, resources, "second").success
        held = store.load("second")
        assert all(s.batch_id is None and "cap" in s.waiting for s in held.shards.values())
        tick = _tick_until(
            instance, resources, lambda t: any(r.job_name == "submit_job" for r in t.run_requests)
        )
        request = next(r for r in tick.run_requests if r.job_name == "submit_job")
        assert request.partition_key == "second"
        assert store.load("first").all_terminal  # it was only let in once the first had finished
        assert _submit(instance, resources, "second").success
    released = next(iter(store.load("second").shards.values()))
    assert released.batch_id and released.waiting is None
    assert counters(emulator.base_url)["batches_created"] == 2


def test_cancel_job_keeps_what_finished(emulator_factory, tmp_path: Path) -> None:
    emulator = emulator_factory(requests_per_second=10.0, chunk_size=1)
    write_input(tmp_path, "stopme", chat_lines(40))
    resources = _resources(emulator, tmp_path)
    store = ManifestStore(tmp_path / "batches")
    with dg.instance_for_test() as instance:
        assert _submit(instance, resources, "stopme").success
        _tick_until(
            instance,
            resources,
            lambda _: (
                (next(iter(store.load("stopme").shards.values())).request_counts or {}).get(
                    "succeeded", 0
                )
                > 0
            ),
        )
        result = cancel_job.execute_in_process(
            partition_key="stopme", instance=instance, resources=resources, run_config=QUIET
        )
        assert result.success
        tick = _tick_until(instance, resources, lambda t: bool(t.run_requests))
        assert [r.job_name for r in tick.run_requests] == ["collect_job"]
        collected = dg.materialize(
            [collected_batches],
            partition_key="stopme",
            instance=instance,
            resources=resources,
            run_config=QUIET,
        )
        assert collected.success
    counts = dict(
        duckdb.sql(
            f"select 'results', count(*) from read_parquet('{tmp_path}/results/*/*.parquet') union all "
            f"select stage, count(*) from read_parquet('{tmp_path}/errors/*/*.parquet') group by stage"
        ).fetchall()
    )
    assert counts["results"] > 0 and counts["canceled"] > 0
    assert counts["results"] + counts["canceled"] == 40


@pytest.mark.parametrize("collected_by", ["parquet", "settled"])
def test_stuck_and_retention_alerts_fire_once_and_clear(
    emulator_factory, tmp_path: Path, collected_by: str
) -> None:
    # in flight, and unreadable for a minute (a 404 right after create), so the poll leaves the
    # crafted deadlines below in place
    emulator = emulator_factory(validation_delay=60.0, retrieve_404_seconds=60.0)
    write_input(tmp_path, "watch", chat_lines(2))
    resources = _resources(emulator, tmp_path)
    store = ManifestStore(tmp_path / "batches")
    cursor = None

    def tick() -> dict[str, dg.AssetCheckEvaluation]:
        nonlocal cursor
        result = batch_status_sensor(
            dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        )
        cursor = result.cursor
        found = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
        assert all(
            e.partition == "watch" and e.severity == dg.AssetCheckSeverity.WARN for e in found
        )
        return {e.check_name: e.passed for e in found}

    with dg.instance_for_test() as instance:
        assert _submit(instance, resources, "watch").success
        shard = next(iter(store.load("watch").shards))
        assert tick() == {}  # all is well: nothing reported
        store.record("watch", shard, expires_at=time.time() - 7 * 3600)
        assert tick() == {STUCK_CHECK: False}
        assert tick() == {}  # reported once, not on every tick
        # it finished at last, but nobody collected it and the provider deletes it in 2 days
        store.record(
            "watch", shard, terminal=True, status="completed", created_at=time.time() - 28 * 86_400
        )
        assert tick() == {STUCK_CHECK: True, RETENTION_CHECK: False}
        if collected_by == "parquet":
            results = tmp_path / "results" / "input_file=watch" / "part-0.parquet"
            results.parent.mkdir(parents=True)
            results.touch()  # collected
        else:
            store.settle("watch")  # collected: the ticks no longer read it, yet the check clears
        assert tick() == {RETENTION_CHECK: True}
        assert tick() == {}


@pytest.mark.parametrize(
    ("delete", "max_error_rate", "rate_ok"), [(False, 0.2, False), (True, 0.5, True)]
)
def test_cleanup_is_optional_and_the_error_rate_is_checked(
    emulator, tmp_path: Path, delete: bool, max_error_rate: float, rate_ok: bool
) -> None:
    write_input(tmp_path, "tidy", chat_lines(3, fail={1: 400}))  # 1 of 3 fails: 33%
    resources = _resources(
        emulator, tmp_path, delete_files_after_collect=delete, max_error_rate=max_error_rate
    )
    store = ManifestStore(tmp_path / "batches")
    with dg.instance_for_test() as instance:
        assert _submit(instance, resources, "tidy").success
        _tick_until(instance, resources, lambda t: bool(t.run_requests))
        result = dg.materialize(
            [collected_batches],
            partition_key="tidy",
            instance=instance,
            resources=resources,
            run_config=QUIET,
        )
        assert result.success  # a warning check does not fail the run
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"every_input_line_accounted_for": True, "error_rate_below_threshold": rate_ok}
    record = next(iter(store.load("tidy").shards.values()))
    ids = [record.input_file_id, record.output_file_id, record.error_file_id]
    assert all(ids) and record.files_deleted is delete
    with BifrostClient(emulator.base_url) as client:
        for file_id in ids:
            if delete:
                with pytest.raises(NotFoundError):
                    client.retrieve_file(file_id, provider="openai")
            else:
                assert client.retrieve_file(file_id, provider="openai").id == file_id
