"""Operating batches through the emulator and the pipeline's jobs: retry waves and outcomes,
budgets (per file and per day, the day's spend read from Dagster), queue limits, cancel, alert
checks and cleanup."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from driver_support import driver, run, submit, tick_until
from pipeline_support import Overlap, chat_lines, counters, write_input

from batch_pipeline.gateway import BifrostClient, NotFoundError
from batch_pipeline.integration.checks import RETENTION_CHECK, STUCK_CHECK
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations import collect as collect_module


def test_retry_wave_then_outcomes(emulator_factory, instance, tmp_path: Path) -> None:
    emulator = emulator_factory(
        requests_per_second=4.0, completion_window_seconds=1.5, chunk_size=1
    )
    write_input(tmp_path, "wave", chat_lines(12, fail={2: 400, 3: 500}))
    drive = driver(instance, emulator.base_url, tmp_path)
    assert run(drive, tmp_path, ["wave"]).ok
    errors = duckdb.sql(
        f"select input_line, stage, retryable from read_parquet('{tmp_path}/errors/*/*.parquet') order by 1"
    ).fetchall()
    retryable = [line for line, _, ok in errors if ok]
    assert (2, "request", False) in errors and 2 not in retryable  # a 400 is not retried
    assert any(stage == "expired" for _, stage, _ in errors)

    wave = drive.execute(drive.names.retry_job, "wave")
    assert wave.success and wave.outputs["requests"] == len(retryable)
    retry_file = tmp_path / "inbox" / "wave.retry-1.jsonl"
    original_lines = (tmp_path / "inbox" / "wave.jsonl").read_text().splitlines()
    assert retry_file.read_text().splitlines() == [original_lines[n - 1] for n in retryable]

    httpx.patch(
        f"{emulator.base_url}/_emulator/config", json={"requests_per_second": 500.0}
    ).raise_for_status()
    assert run(drive, tmp_path, ["wave.retry-1"]).ok
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
    # the outcomes asset of the retry's partition names the original and the attempts it read
    outcomes = (
        instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=drive.names.batch_outcomes, asset_partitions=["wave.retry-1"]
            ),
            limit=1,
        )
        .records[0]
        .asset_materialization
    )
    assert outcomes.metadata["attempts"].value == ["wave", "wave.retry-1"]
    assert outcomes.metadata["dagster/row_count"].value == 12


def test_budget_too_small_blocks_submission(emulator, instance, tmp_path: Path) -> None:
    write_input(tmp_path, "pricey", chat_lines(5))
    drive = driver(
        instance, emulator.base_url, tmp_path, {"submit": {"max_cost_per_file_usd": 1e-7}}
    )
    message = submit(drive, "pricey")
    assert message is not None and "exceeds the per-file budget" in message
    assert counters(emulator.base_url)["batches_created"] == 0


def test_the_daily_budget_counts_what_dagster_recorded_today(
    emulator, instance, tmp_path: Path
) -> None:
    """Today's spend is the sum of today's submissions' metadata; the second file passes it."""
    write_input(tmp_path, "morning", chat_lines(5))
    write_input(tmp_path, "noon", chat_lines(6)[1:])  # as many requests, other content
    drive = driver(instance, emulator.base_url, tmp_path)
    assert submit(drive, "morning") is None
    (record,) = instance.fetch_materializations(drive.names.submitted_batches, limit=1).records
    spent = record.asset_materialization.metadata["estimated_cost_submitted_now_usd"].value
    assert spent > 0
    budget = driver(
        instance, emulator.base_url, tmp_path, {"submit": {"max_cost_per_day_usd": spent * 1.5}}
    )
    message = submit(budget, "noon")
    assert message is not None and "exceeds the daily budget" in message, message
    assert f"on top of ${spent:.4f} submitted today" in message
    assert counters(emulator.base_url)["batches_created"] == 1
    roomy = driver(
        instance, emulator.base_url, tmp_path, {"submit": {"max_cost_per_day_usd": spent * 2.5}}
    )
    assert submit(roomy, "noon") is None


def test_enqueued_token_cap_holds_shards_until_earlier_batches_finish(
    emulator_factory, instance, tmp_path: Path
) -> None:
    emulator = emulator_factory(requests_per_second=10.0, chunk_size=1)
    write_input(tmp_path, "first", chat_lines(8))
    write_input(tmp_path, "second", chat_lines(9)[1:])  # as many requests, other content
    drive = driver(
        instance,
        emulator.base_url,
        tmp_path,
        {"submit": {"max_enqueued_tokens": {"openai/gpt-4o-mini": 500}}},
    )
    store = ManifestStore(tmp_path / "batches")
    assert submit(drive, "first") is None
    assert submit(drive, "second") is None
    held = store.load("second")
    assert all(s.batch_id is None and "cap" in s.waiting for s in held.shards.values())
    # the sensor asks for the waiting file's submit once the first batch ended; that run
    # reads the first batch's status again itself before it lets the shard in
    tick_until(
        drive,
        lambda t: any(
            r.job_name == drive.names.submit_job and r.partition == "second" for r in t.runs
        ),
    )
    released = next(iter(store.load("second").shards.values()))
    assert released.batch_id and released.waiting is None
    assert store.load("first").all_terminal  # recorded by that submit run, not by the sensor
    assert counters(emulator.base_url)["batches_created"] == 2


def test_cancel_job_keeps_what_finished(emulator_factory, instance, tmp_path: Path) -> None:
    emulator = emulator_factory(requests_per_second=10.0, chunk_size=1)
    write_input(tmp_path, "stopme", chat_lines(40))
    drive = driver(instance, emulator.base_url, tmp_path)
    assert submit(drive, "stopme") is None

    def some_succeeded(done) -> bool:
        return any(
            e.partition == "stopme" and e.metadata["requests_succeeded"].value > 0
            for e in done.events
            if isinstance(e, dg.AssetObservation)
        )

    tick_until(drive, some_succeeded)
    cancelled = drive.execute(drive.names.cancel_job, "stopme")
    assert cancelled.success and cancelled.outputs["cancelled"] == 1
    collected = tick_until(drive, lambda t: bool(t.runs))
    assert [(r.job_name, r.success) for r in collected.runs] == [(drive.names.collect_job, True)]
    counts = dict(
        duckdb.sql(
            f"select 'results', count(*) from read_parquet('{tmp_path}/results/*/*.parquet') union all "
            f"select stage, count(*) from read_parquet('{tmp_path}/errors/*/*.parquet') group by stage"
        ).fetchall()
    )
    assert counts["results"] > 0 and counts["canceled"] > 0
    assert counts["results"] + counts["canceled"] == 40


def test_stuck_and_retention_alerts_fire_once_and_clear(
    emulator_factory, instance, tmp_path: Path
) -> None:
    """The sensor asks for a run of both checks when a file's verdict changes, once; the run
    judges from the manifest, its batches read again from the gateway."""
    # in flight, and unreadable for a minute (a 404 right after create), so neither the sensor
    # nor the check runs overwrite the crafted deadlines below
    emulator = emulator_factory(validation_delay=60.0, retrieve_404_seconds=60.0)
    write_input(tmp_path, "watch", chat_lines(2))
    drive = driver(instance, emulator.base_url, tmp_path)
    store = ManifestStore(tmp_path / "batches")

    def alerts() -> dict[str, bool]:
        """The verdicts of the check runs this tick asks for (the other requests not run)."""
        requests = drive.evaluate(drive.names.status_sensor).run_requests
        verdicts: dict[str, bool] = {}
        for request in requests:
            if request.job_name == drive.names.alerts_job:
                assert request.partition_key == "watch"
                checks = drive.execute(drive.names.alerts_job, "watch").checks
                verdicts.update(checks)
        return verdicts

    assert submit(drive, "watch") is None
    shard = next(iter(store.load("watch").shards))
    assert alerts() == {}  # all is well: nothing asked
    store.record("watch", shard, expires_at=time.time() - 7 * 3600)
    assert alerts() == {STUCK_CHECK: False, RETENTION_CHECK: True}
    assert alerts() == {}  # asked once, not on every tick
    # it finished at last, but nobody collected it and the provider deletes it in 2 days
    store.record(
        "watch", shard, terminal=True, status="completed", created_at=time.time() - 28 * 86_400
    )
    assert alerts() == {STUCK_CHECK: True, RETENTION_CHECK: False}
    results = tmp_path / "results" / "input_file=watch" / "part-0.parquet"
    results.parent.mkdir(parents=True)
    results.touch()  # collected (as far as the check can tell) ...
    instance.report_runless_asset_event(  # ... and as Dagster records it
        dg.AssetMaterialization(drive.names.batch_results, partition="watch")
    )
    assert alerts() == {STUCK_CHECK: True, RETENTION_CHECK: True}
    assert alerts() == {}


@pytest.mark.parametrize(
    ("delete", "max_error_rate", "rate_ok"), [(False, 0.2, False), (True, 0.5, True)]
)
def test_cleanup_is_optional_and_the_error_rate_is_checked(
    emulator, instance, tmp_path: Path, delete: bool, max_error_rate: float, rate_ok: bool
) -> None:
    write_input(tmp_path, "tidy", chat_lines(3, fail={1: 400}))  # 1 of 3 fails: 33%
    drive = driver(
        instance,
        emulator.base_url,
        tmp_path,
        {"collect": {"delete_files_after": delete}, "alerts": {"max_error_rate": max_error_rate}},
    )
    store = ManifestStore(tmp_path / "batches")
    assert submit(drive, "tidy") is None
    collected = tick_until(drive, lambda t: bool(t.runs)).runs[0]
    assert collected.success  # a warning check does not fail the run
    assert collected.checks == {
        "every_input_line_accounted_for": True,
        "error_rate_below_threshold": rate_ok,
    }
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


def test_collect_downloads_a_files_batches_concurrently(
    emulator, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of six batches (one per model): their outputs are downloaded several at once,
    never more than PARALLEL_DOWNLOADS, and every line still lands in one row."""
    models = [f"openai/gpt-4o-mini-{n}" for n in range(6)]
    lines = [line for m in models for line in chat_lines(5, model=m)]
    for number, line in enumerate(lines, 1):
        line["custom_id"] = f"req-{number:04d}"
    write_input(tmp_path, "wide", lines)
    downloads = Overlap()
    wrapped = downloads.wrap(BifrostClient.download_file_content)
    monkeypatch.setattr(BifrostClient, "download_file_content", wrapped)
    summary = run(driver(instance, emulator.base_url, tmp_path), tmp_path, ["wide"])
    assert summary.ok, summary.render()
    assert counters(emulator.base_url)["batches_created"] == 6
    assert 2 <= downloads.most <= collect_module.PARALLEL_DOWNLOADS
    rows = duckdb.sql(
        f"select count(*) from read_parquet('{tmp_path}/results/input_file=wide/*.parquet')"
    ).fetchall()
    assert rows == [(30,)]


def test_collect_downloads_are_scratch_and_its_parquet_is_durable(
    emulator, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's output is downloaded to a scratch file that is read once and deleted: it is
    never forced to disk (that only costs disk bandwidth); the Parquet it becomes is."""
    write_input(tmp_path, "scratch", chat_lines(8))
    synced: list[str] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    summary = run(driver(instance, emulator.base_url, tmp_path), tmp_path, ["scratch"])
    assert summary.ok, summary.render()
    assert any("/results/input_file=scratch/" in path for path in synced), synced
    assert not [path for path in synced if "/downloads/" in path]
