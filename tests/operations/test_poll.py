"""Polling against the emulator: a 404 must persist before a batch counts as gone, a provider-wide
404 is a setup fault, a sweep stops at its deadline, and settled files are not read at all."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from batch_pipeline.gateway import BifrostClient
from batch_pipeline.ledger.manifest import ManifestStore, ShardRecord
from batch_pipeline.ledger.storage import DataPath
from batch_pipeline.operations.poll import GONE_STATUS, NOT_FOUND_GRACE_SECONDS, poll_in_flight


def _store(batches_dir: DataPath, batch_ids: list[str]) -> ManifestStore:
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
                created_at=time.time() - 3600,
            )
    return store


@pytest.fixture
def client(emulator):
    with BifrostClient(emulator.base_url, max_retry_seconds=2) as c:
        yield c


def test_a_404_must_persist_before_the_batch_counts_as_gone(client, tmp_path: Path) -> None:
    store = _store(tmp_path, ["batch_unknown"])
    now = time.time()
    first = poll_in_flight(client, store, now=now)
    record = store.load("f").shards["s0"]
    assert not record.terminal and record.not_found_since == now
    assert first.ready == [] and "answers 404" in first.problems[0]
    later = poll_in_flight(client, store, now=now + NOT_FOUND_GRACE_SECONDS + 1)
    record = store.load("f").shards["s0"]
    assert record.terminal and record.status == GONE_STATUS
    assert later.ready == ["f"]  # judged on the manifest as this poll saved it


def test_every_batch_of_a_provider_404_is_a_setup_fault(client, tmp_path: Path) -> None:
    store = _store(tmp_path, ["batch_a", "batch_b"])
    for later in (0, 2 * NOT_FOUND_GRACE_SECONDS):
        report = poll_in_flight(client, store, now=time.time() + later)
        assert "check the gateway URL and key" in report.problems[0]
    assert not any(r.terminal for r in store.load("f").shards.values())


def test_a_sweep_stops_at_its_deadline(client, tmp_path: Path) -> None:
    store = _store(tmp_path, [f"batch_{i}" for i in range(3)])
    report = poll_in_flight(client, store, deadline_seconds=0.0, offset=1)
    assert (report.in_flight, report.polled, report.next_offset) == (3, 0, 1)


def test_settled_files_are_neither_read_nor_polled(client, emulator, tmp_path: Path) -> None:
    store = _store(tmp_path, ["batch_never_read"])
    store.settle("f")
    (tmp_path / "f.json").write_text("not json: reading it would fail")
    report = poll_in_flight(client, store)
    assert (report.in_flight, report.polled, report.manifests) == (0, 0, {})


def test_settled_since_keeps_files_settled_after_it(tmp_path: Path) -> None:
    store = _store(tmp_path, ["b"])
    store.settle("f")
    assert store.active() == []
    assert [m.input_file for m in store.active(settled_since=time.time() - 60)] == ["f"]
    assert store.active(settled_since=time.time() + 60) == []


def test_a_manifest_locked_elsewhere_is_left_for_the_next_tick(
    client, s3_bucket, monkeypatch
) -> None:
    """On S3 a dead pod's lease holds a manifest for a minute: the tick skips that file."""
    from batch_pipeline.ledger.storage import data_root, lock
    from batch_pipeline.operations import poll

    monkeypatch.setattr(poll, "MANIFEST_WAIT_SECONDS", 0.3)
    store = _store(data_root(s3_bucket.url()) / "batches", ["batch_elsewhere"])
    with lock(store.dir / ".f.lock"):
        report = poll_in_flight(client, store)
    assert report.polled == 1
    assert any("f: statuses not recorded this time" in p for p in report.problems)
