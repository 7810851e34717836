"""Batch status against the emulator: a poll reads and writes nothing (a 404 must persist before
a batch counts as gone, a provider-wide 404 is a setup fault, a sweep stops at its deadline, a
held lock is no obstacle); `refresh_statuses`, what runs call, records it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from pipeline_support import chat_lines

from batch_pipeline.gateway import BifrostClient
from batch_pipeline.ledger.manifest import ManifestStore, ShardRecord
from batch_pipeline.ledger.storage import DataPath
from batch_pipeline.operations.poll import (
    GONE_STATUS,
    NOT_FOUND_GRACE_SECONDS,
    BatchState,
    file_progress,
    in_flight_batches,
    poll_batches,
    refresh_statuses,
    with_states,
)


def _store(batches_dir: DataPath, batch_ids: list[str], age: float = 3600) -> ManifestStore:
    store = ManifestStore(batches_dir)
    with store.update("f", input_sha256="x") as manifest:
        for i, batch_id in enumerate(batch_ids):
            manifest.shards[f"s{i}"] = ShardRecord(
                shard_id=f"s{i}",
                provider="openai",
                model="m",
                endpoint="/v1/chat/completions",
                request_count=1,
                bytes=1,
                state="submitted",
                batch_id=batch_id,
                created_at=time.time() - age,
            )
    return store


@pytest.fixture
def client(emulator):
    with BifrostClient(emulator.base_url, max_retry_seconds=2) as c:
        yield c


def _refs(store: ManifestStore):
    return in_flight_batches([store.load("f")])


def test_a_404_must_persist_before_the_batch_counts_as_gone(client, tmp_path: Path) -> None:
    store = _store(tmp_path, ["batch_unknown"])
    written = (tmp_path / "f.json").read_bytes()
    now = time.time()
    first = poll_batches(client, _refs(store), now=now)
    assert first.states == {} and first.missing_since == {"batch_unknown": now}
    assert "answers 404" in first.problems[0]
    later = poll_batches(
        client,
        _refs(store),
        missing_since=first.missing_since,
        now=now + NOT_FOUND_GRACE_SECONDS + 1,
    )
    assert later.states == {"batch_unknown": BatchState.gone()} and later.missing_since == {}
    assert (tmp_path / "f.json").read_bytes() == written  # polls write nothing
    progress = file_progress(with_states(store.load("f"), later.states))
    assert progress.ready and progress.statuses == {GONE_STATUS: 1}


def test_every_batch_of_a_provider_404_is_a_setup_fault(client, tmp_path: Path) -> None:
    store = _store(tmp_path, ["batch_a", "batch_b"])
    missing: dict[str, float] = {}
    for later in (0, 2 * NOT_FOUND_GRACE_SECONDS):
        report = poll_batches(client, _refs(store), missing_since=missing, now=time.time() + later)
        assert "check the gateway URL and key" in report.problems[0]
        assert report.states == {} and report.missing_since == {}
        missing = report.missing_since


def test_a_sweep_past_its_deadline_asks_for_nothing(client, tmp_path: Path) -> None:
    store = _store(tmp_path, [f"batch_{i}" for i in range(3)])
    report = poll_batches(client, _refs(store), deadline=time.monotonic(), offset=1)
    assert (report.in_flight, report.polled, report.next_offset) == (3, 0, 1)


def _arm_latency(emulator, low: float, high: float) -> None:
    fault = {"kind": "slow", "delay": low, "delay_max": high, "count": None}
    httpx.post(
        f"{emulator.base_url}/_emulator/faults", json={**fault, "routes": ["batch_retrieve"]}
    ).raise_for_status()


def test_a_slow_sweep_ends_at_its_deadline_and_the_next_asks_the_abandoned_first(
    emulator, client, tmp_path: Path
) -> None:
    """Calls of 0.5-0.8 s on 2 workers, 2 s each sweep: the sweep returns at its deadline with
    the calls still out abandoned; the next sweep asks for those first, then goes on from where
    the first stopped. Each sweep answers at least 2 x floor(2 / 0.8) = 4 batches, so 3 sweeps
    cover all 12 (docs/guarantees.md: ceil(N / (workers x floor(time / latency))))."""
    shard = tmp_path / "shard.jsonl"
    line = chat_lines(1)[0]
    line["body"]["model"] = "gpt-4o-mini"
    shard.write_text(json.dumps(line) + "\n")
    file_id = client.upload_file(shard, provider="openai").id
    ids = [
        client.create_batch(
            model="openai/gpt-4o-mini", endpoint="/v1/chat/completions", input_file_id=file_id
        ).id
        for _ in range(12)
    ]
    store = _store(tmp_path / "batches", ids)
    refs = _refs(store)
    _arm_latency(emulator, 0.5, 0.8)
    seen: list[str] = []
    first: list[str] = []
    offset = 0
    for _ in range(3):
        started = time.monotonic()
        report = poll_batches(
            client, refs, offset=offset, first=first, deadline=started + 2.0, workers=2
        )
        assert time.monotonic() - started < 2.0 + 0.3  # abandoned calls are not awaited
        assert 4 <= report.polled <= 8 and len(report.unanswered) <= 2  # one per worker
        if first:  # the abandoned ones were asked for first, and answered
            assert set(first) <= set(report.states)
        seen += [b for b in report.states if b not in seen]
        first, offset = report.unanswered, report.next_offset
        if report.unanswered:
            assert "abandoned" in report.problems[0]
    assert sorted(seen) == sorted(ids)


def test_batches_known_to_have_ended_are_not_polled_again(tmp_path: Path) -> None:
    store = _store(tmp_path, ["b0", "b1"])
    known = {"b0": BatchState("completed", True, {"total": 1})}
    assert [r.batch_id for r in in_flight_batches([store.load("f")], known)] == ["b1"]


def test_a_poll_never_waits_on_a_lock(client, s3_bucket) -> None:
    """On S3 a dead pod's lease holds a manifest for a minute: a tick does not care."""
    from batch_pipeline.ledger.storage import data_root, lock

    store = _store(data_root(s3_bucket.url()) / "batches", ["batch_elsewhere"])
    started = time.monotonic()
    with lock(store.dir / ".f.lock"):
        report = poll_batches(client, _refs(store))
    assert report.polled == 1 and time.monotonic() - started < 10


def _finished_batch(client: BifrostClient, folder: Path) -> str:
    """A batch of two requests at the emulator, waited for until it completed."""
    lines = chat_lines(2)
    for line in lines:
        line["body"]["model"] = "gpt-4o-mini"  # a file for OpenAI names the bare model
    shard = folder / "shard.jsonl"
    shard.write_text("".join(json.dumps(line) + "\n" for line in lines))
    file_id = client.upload_file(shard, provider="openai").id
    batch = client.create_batch(
        model="openai/gpt-4o-mini", endpoint="/v1/chat/completions", input_file_id=file_id
    )
    deadline = time.monotonic() + 30
    while client.retrieve_batch(batch.id, provider="openai").status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return batch.id


def test_refresh_records_the_status_runs_act_on(client, tmp_path: Path) -> None:
    store = _store(tmp_path / "batches", [_finished_batch(client, tmp_path), "batch_gone"])
    saved = refresh_statuses(client, store, "f")
    assert saved == store.load("f")
    done, gone = saved.shards["s0"], saved.shards["s1"]
    assert (done.status, done.terminal, done.request_counts["succeeded"]) == ("completed", True, 2)
    assert done.output_file_id and done.polled_at
    assert (gone.status, gone.terminal) == (GONE_STATUS, True)  # 404 an hour after its create
    written = (tmp_path / "batches" / "f.json").read_bytes()
    assert refresh_statuses(client, store, "f") == saved  # nothing in flight: nothing asked
    assert (tmp_path / "batches" / "f.json").read_bytes() == written


def test_refresh_leaves_a_fresh_404_alone(client, tmp_path: Path) -> None:
    store = _store(tmp_path, ["batch_just_made"], age=10)
    saved = refresh_statuses(client, store, "f")
    assert not saved.shards["s0"].terminal and saved.shards["s0"].status is None
