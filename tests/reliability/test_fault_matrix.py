"""Fault matrix: each fault the emulator injects, with a run of two partitions (OpenAI with two
shards, Anthropic inline) through the Dagster assets and the status sensor. Every case ends with
the same proofs: the run completed (or failed with one clear line and completed when re-run, as
that line says), one batch per shard, every input line in exactly one row, whole Parquet files."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pytest
from driver_support import driver, poll_and_collect, run, submit
from pipeline_support import anthropic_lines, chat_lines, write_input
from reliability_support import (
    arm,
    armed,
    assert_invariant,
    assert_no_partial_files,
    assert_one_batch_per_shard,
    assert_parquet_complete,
    counters,
    input_lines,
    shard_ids,
)

from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.collect import OUTPUT_ATTEMPTS

NAMES = ("chat", "claude")
# The routes a run of both partitions uses: uploads, creates, polls, downloads, /results.
PIPELINE_ROUTES = ("file_upload", "batch_create", "batch_retrieve", "file_content", "batch_results")
SETTLE = 1.0  # create_settle_seconds where a test re-runs after an unknown create outcome


def _inputs(data_root: Path) -> dict[str, Path]:
    lines = chat_lines(12, fail={3: 500})
    lines[5]["body"]["model"] = "openai/gpt-4.1-mini"  # a second model: a second shard
    return {
        "chat": write_input(data_root, "chat", lines),
        "claude": write_input(data_root, "claude", anthropic_lines(6, fail={2: 400})),
    }


def _submit_all(drive, names=NAMES) -> dict[str, str | None]:
    return {name: submit(drive, name) for name in names}


def _assert_proofs(base_url: str, data_root: Path, paths: dict[str, Path]) -> dict[str, Any]:
    """The four proofs of every case; returns the rows per partition for case-specific checks."""
    assert_one_batch_per_shard(base_url, data_root, paths)
    rows = {}
    for name, path in paths.items():
        assert_invariant(data_root, name, input_lines(path))
        rows[name] = assert_parquet_complete(data_root, name)
    assert_no_partial_files(data_root)
    return rows


def _assert_one_line(message: str | None, *fragments: str) -> None:
    assert message, "expected a failure message"
    assert "\n" not in message.strip() and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def _run_clean(emulator, instance, data_root: Path, **gateway: Any) -> dict[str, Any]:
    """Submit both files, poll, collect; every step must succeed at the first attempt."""
    paths = _inputs(data_root)
    drive = driver(instance, emulator.base_url, data_root, **gateway)
    assert _submit_all(drive) == dict.fromkeys(NAMES)
    assert poll_and_collect(drive, NAMES) == dict.fromkeys(NAMES)
    return _assert_proofs(emulator.base_url, data_root, paths)


@pytest.mark.parametrize("kind", ["rate_limit", "server_error"])
def test_rate_limits_and_5xx_bursts_on_every_route_are_ridden_out(
    emulator, instance, data_root: Path, kind: str
) -> None:
    for route in PIPELINE_ROUTES:
        if kind == "server_error" and route == "batch_create":
            continue  # a 5xx on create is an unknown outcome: its own case below
        arm(emulator.base_url, kind=kind, routes=[route], count=2, retry_after=0.1, status=503)
    _run_clean(emulator, instance, data_root, max_retry_seconds=10)
    assert armed(emulator.base_url) == []  # every route met its fault, twice
    fired = counters(emulator.base_url)["faults_fired"][kind]
    assert fired == 2 * (len(PIPELINE_ROUTES) - (kind == "server_error"))


def test_5xx_on_create_stops_clearly_then_the_rerun_creates_once(
    emulator, instance, data_root: Path
) -> None:
    paths = _inputs(data_root)
    drive = driver(
        instance, emulator.base_url, data_root, {"submit": {"create_settle_seconds": SETTLE}}
    )
    arm(emulator.base_url, kind="server_error", routes=["batch_create"], count=2, status=502)
    first = _submit_all(drive)
    _assert_one_line(first["chat"], "may or may not have made a batch", "re-run later")
    _assert_one_line(first["claude"], "assume_not_created")
    assert counters(emulator.base_url)["batches_created"] == 0
    # at once, the batch of a slow create might still appear: the re-run waits, and says so
    _assert_one_line(submit(drive, "chat"), "is not listed yet", "re-run after")
    time.sleep(SETTLE)
    assert submit(drive, "chat") is None
    # Anthropic keeps no metadata to look the batch up by: the operator confirms, as told.
    (claude_shard,) = shard_ids(data_root, ["claude"])
    assert submit(drive, "claude", {"assume_not_created": [claude_shard]}) is None
    assert poll_and_collect(drive, NAMES) == dict.fromkeys(NAMES)
    _assert_proofs(emulator.base_url, data_root, paths)


def test_create_answered_too_late_is_adopted_not_repeated(
    emulator, instance, data_root: Path
) -> None:
    """The create reaches the gateway and makes its batch, but the answer never comes back in
    time: the batch is found again by its metadata and adopted in the same run."""
    paths = {"chat": _inputs(data_root)["chat"]}
    drive = driver(
        instance, emulator.base_url, data_root, read_timeout_seconds=0.5, max_retry_seconds=5
    )
    arm(emulator.base_url, kind="slow_answer", routes=["batch_create"], delay=1.5)
    assert submit(drive, "chat") is None
    assert submit(drive, "chat") is None  # a re-run reuses it
    assert poll_and_collect(drive, ["chat"]) == {"chat": None}
    _assert_proofs(emulator.base_url, data_root, paths)
    assert counters(emulator.base_url)["faults_fired"] == {"slow_answer": 1}


def test_slow_create_past_the_timeout_then_rerun_later_creates_once(
    emulator, instance, data_root: Path
) -> None:
    """The create waits at the gateway past the client's timeout; the gateway makes the batch
    after the run gave up. A re-run (later, as the message says) adopts it."""
    paths = {"chat": _inputs(data_root)["chat"]}
    drive = driver(
        instance, emulator.base_url, data_root, read_timeout_seconds=0.5, max_retry_seconds=5
    )
    arm(emulator.base_url, kind="slow", routes=["batch_create"], delay=1.5, count=1)
    _assert_one_line(submit(drive, "chat"), "may or may not have made a batch")
    deadline = time.monotonic() + 10
    while counters(emulator.base_url)["batches_created"] < 1:  # the late create lands
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert submit(drive, "chat") is None
    assert poll_and_collect(drive, ["chat"]) == {"chat": None}
    _assert_proofs(emulator.base_url, data_root, paths)


def test_slow_create_then_immediate_rerun_creates_no_second_batch(
    emulator, instance, data_root: Path
) -> None:
    """The re-run comes while the gateway still holds the first create: it finds no batch yet,
    and must not take that as proof that none will appear."""
    paths = {"chat": _inputs(data_root)["chat"]}
    drive = driver(
        instance, emulator.base_url, data_root, read_timeout_seconds=0.3, max_retry_seconds=5
    )
    arm(emulator.base_url, kind="slow", routes=["batch_create"], delay=2.0, count=1)
    _assert_one_line(submit(drive, "chat"), "may or may not have made a batch")
    _assert_one_line(submit(drive, "chat"), "is not listed yet", "re-run after")
    time.sleep(2.5)  # the first create lands
    assert submit(drive, "chat") is None  # adopted
    assert_one_batch_per_shard(emulator.base_url, data_root, paths)


@pytest.mark.parametrize(
    "route", ["batch_retrieve", "file_content", "batch_results", "file_upload", "batch_list"]
)
def test_slow_answers_past_the_read_timeout_are_retried(
    emulator, instance, data_root: Path, route: str
) -> None:
    arm(emulator.base_url, kind="slow", routes=[route], delay=1.0, count=2)
    if route == "batch_list":  # the pipeline lists batches only to settle an unknown create
        arm(emulator.base_url, kind="server_error", routes=["batch_create"], count=1)
        paths = _inputs(data_root)
        drive = driver(
            instance,
            emulator.base_url,
            data_root,
            {"submit": {"create_settle_seconds": SETTLE}},
            read_timeout_seconds=0.4,
            max_retry_seconds=10,
        )
        _assert_one_line(submit(drive, "chat"), "may or may not have made a batch")
        time.sleep(SETTLE)
        assert _submit_all(drive) == dict.fromkeys(NAMES)
        assert poll_and_collect(drive, NAMES) == dict.fromkeys(NAMES)
        _assert_proofs(emulator.base_url, data_root, paths)
    else:
        _run_clean(emulator, instance, data_root, read_timeout_seconds=0.4, max_retry_seconds=10)
    assert armed(emulator.base_url) == []


def test_connection_reset_during_downloads_restarts_them(
    emulator, instance, data_root: Path
) -> None:
    arm(emulator.base_url, kind="reset_download", after_bytes=200, count=3)
    _run_clean(emulator, instance, data_root)
    assert counters(emulator.base_url)["faults_fired"] == {"reset_download": 3}


def test_malformed_and_truncated_output_lines_become_parse_errors(
    emulator, instance, data_root: Path
) -> None:
    arm(emulator.base_url, kind="malformed_output", lines=2, count=3)  # all three batches
    rows = _run_clean(emulator, instance, data_root)
    assert counters(emulator.base_url)["faults_fired"] == {"malformed_output": 3}
    stages = duckdb.sql(
        f"select stage, count(*) from read_parquet('{data_root}/errors/*/*.parquet') group by 1"
    ).fetchall()
    # OpenAI output lines cut short are parse errors (custom_id recovered where readable);
    # Bifrost's /results drops unreadable Anthropic items, so those requests are missing.
    assert dict(stages) == {"parse": 3, "missing": 2, "request": 1}
    assert sum(r + e for r, e in rows.values()) == 18


def test_404_right_after_create_is_waited_out(emulator_factory, instance, data_root) -> None:
    emulator = emulator_factory(retrieve_404_seconds=0.6)
    _run_clean(emulator, instance, data_root)
    assert counters(emulator.base_url)["faults_fired"]["retrieve_404"] >= 1


@pytest.mark.parametrize("same_port", [True, False], ids=["same-port", "new-url"])
def test_gateway_restart_in_the_middle_of_the_batches(
    emulator_factory, instance, data_root: Path, tmp_path: Path, same_port: bool
) -> None:
    """Stop the emulator while its batches run and start a new one on the same state dir (on the
    same port, or on a new URL the run is pointed at); the run carries on where it was."""
    state = tmp_path / "gateway-state"
    timing = {"requests_per_second": 4.0, "chunk_size": 1, "state_dir": state}
    first = emulator_factory(**timing)
    paths = _inputs(data_root)
    drive = driver(instance, first.base_url, data_root, max_retry_seconds=20)
    assert _submit_all(drive) == dict.fromkeys(NAMES)
    started: dict[str, Any] = {}
    later = threading.Timer(
        1.0, lambda: started.update(emulator=emulator_factory(**timing, port=first.port))
    )

    def restart(tick: int) -> None:
        if tick != 1:
            return
        listed = httpx.get(f"{first.base_url}/v1/batches", params={"provider": "openai"}).json()
        assert any(b["status"] == "in_progress" for b in listed["data"])  # mid-batch
        first.stop()
        if same_port:  # down for a while: the next tick meets a closed port and retries
            later.start()
        else:
            started["emulator"] = emulator_factory(**timing, port=0)
            drive.override(gateway_url=started["emulator"].base_url)

    try:
        outcome = poll_and_collect(drive, NAMES, between_ticks=restart)
    finally:
        later.cancel()
        if later.is_alive():
            later.join()
    assert outcome == dict.fromkeys(NAMES)
    second = started["emulator"]
    assert (second.port == first.port) is same_port
    _assert_proofs(second.base_url, data_root, paths)


def test_anthropic_batches_counted_by_content_once(emulator, instance, data_root: Path) -> None:
    """Anthropic keeps no batch metadata: its batch is also counted by its requests' content."""
    _run_clean(emulator, instance, data_root)
    assert list(counters(emulator.base_url)["batches_by_fingerprint"].values()) == [1]


def test_a_gateway_refusal_during_submit_is_one_clear_line(
    emulator_factory, instance, data_root: Path, monkeypatch
) -> None:
    emulator = emulator_factory(api_keys=("sk-bf-the-right-key",))
    monkeypatch.setenv("BIFROST_API_KEY", "sk-bf-a-wrong-key")
    write_input(data_root, "chat", chat_lines(2))
    summary = run(driver(instance, emulator.base_url, data_root), data_root, ["chat"])
    _assert_one_line(summary.files[0].message, "401 from the gateway", "check BIFROST_API_KEY")
    assert counters(emulator.base_url)["batches_created"] == 0


# A gateway that lies about a finished batch's output: what it served is told, never trusted.


def _collect_runs(drive, name: str) -> list[dg.DagsterRun]:
    return drive.instance.get_runs(
        dg.RunsFilter(job_name=drive.names.collect_job, tags={"dagster/partition": name})
    )


def _warnings_logged(drive, run_id: str) -> list[str]:
    return [e.user_message for e in drive.instance.all_logs(run_id) if e.level == logging.WARNING]


def _retries(drive, run_id: str) -> int:
    return len(drive.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY))


def test_an_output_file_answering_404_ends_in_missing_rows_after_bounded_attempts(
    emulator, instance, data_root: Path
) -> None:
    """Every output and error file of the finished batches answers 404, always: one collect run
    tries OUTPUT_ATTEMPTS times (counted in the manifest), then records every request as
    missing with the reason, and says so in the log and the asset's metadata."""
    paths = {"chat": _inputs(data_root)["chat"]}  # two shards, so two batches to give up on
    drive = driver(instance, emulator.base_url, data_root)
    assert submit(drive, "chat") is None
    arm(emulator.base_url, kind="not_found", routes=["file_content"], count=None)
    assert poll_and_collect(drive, ["chat"], timeout=90) == {"chat": None}
    rows = _assert_proofs(emulator.base_url, data_root, paths)
    assert rows["chat"] == (0, 12)
    errors = duckdb.sql(
        f"select stage, error_code, retryable, count(*), count(distinct error_message) "
        f"from read_parquet('{data_root}/errors/*/*.parquet') group by all"
    ).fetchall()
    assert errors == [("missing", "output_unavailable", True, 12, 2)]  # one reason per batch
    message = duckdb.sql(
        f"select any_value(error_message) from read_parquet('{data_root}/errors/*/*.parquet')"
    ).fetchall()[0][0]
    assert f"answered 404 at {OUTPUT_ATTEMPTS} attempts" in message, message
    manifest = ManifestStore(data_root / "batches").load("chat")
    assert [s.output_not_found for s in manifest.shards.values()] == [OUTPUT_ATTEMPTS] * 2
    (run,) = _collect_runs(drive, "chat")  # one run, its step retried until the bound
    assert _retries(drive, run.run_id) == OUTPUT_ATTEMPTS - 1
    warned = _warnings_logged(drive, run.run_id)
    for batch_id in manifest.batch_ids:
        assert any(batch_id in w and "recorded as missing" in w for w in warned), warned
    meta = drive.outcome(run.run_id).materializations[drive.names.batch_errors.to_user_string()]
    assert meta["gateway_warnings"].count("answered 404") == 2


@pytest.mark.parametrize(
    ("lies", "stages", "warned"),
    [
        (
            [("duplicate_ids", 2), ("unknown_ids", 1)],
            {"request": 1},
            ["dropped 2 output line(s) repeating a custom_id", "dropped 1 output line(s) whose"],
        ),
        ([("fewer_lines", 3)], {"request": 1, "missing": 3}, ["no result line for 3 of 8"]),
    ],
    ids=["duplicate-and-unknown-ids", "fewer-lines"],
)
def test_an_output_file_that_lies_is_collected_with_a_warning(
    emulator, instance, data_root: Path, lies, stages, warned
) -> None:
    """Repeated or foreign custom_ids are dropped, requests without a line become `missing`
    rows; each is a log warning naming the batch and the count, and metadata on the asset."""
    paths = {"chat": write_input(data_root, "chat", chat_lines(8, fail={8: 500}))}
    for kind, lines in lies:
        arm(emulator.base_url, kind=kind, lines=lines)
    drive = driver(instance, emulator.base_url, data_root)
    assert submit(drive, "chat") is None
    assert poll_and_collect(drive, ["chat"]) == {"chat": None}
    assert counters(emulator.base_url)["faults_fired"] == {kind: 1 for kind, _ in lies}
    _assert_proofs(emulator.base_url, data_root, paths)
    found = duckdb.sql(
        f"select stage, count(*) from read_parquet('{data_root}/errors/*/*.parquet') group by 1"
    ).fetchall()
    assert dict(found) == stages
    (run,) = _collect_runs(drive, "chat")
    (batch_id,) = ManifestStore(data_root / "batches").load("chat").batch_ids
    logged = _warnings_logged(drive, run.run_id)
    meta = drive.outcome(run.run_id).materializations[drive.names.batch_errors.to_user_string()]
    for fragment in warned:
        assert any(f"batch {batch_id}: {fragment}" in w for w in logged), logged
        assert fragment in meta["gateway_warnings"]
    assert meta["dropped_output_lines"] == sum(n for kind, n in lies if kind != "fewer_lines")
