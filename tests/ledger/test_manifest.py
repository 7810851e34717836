import multiprocessing
from pathlib import Path

import pytest

from batch_pipeline.ledger.manifest import ManifestStore, ShardRecord


def _record(shard_id: str) -> ShardRecord:
    return ShardRecord(
        shard_id=shard_id,
        provider="openai",
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        request_count=3,
        bytes=100,
    )


def test_update_creates_and_persists(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    with store.update("a", input_sha256="abc") as manifest:
        manifest.shards["s1"] = _record("s1")
    loaded = store.load("a")
    assert loaded is not None and loaded.input_sha256 == "abc"
    assert loaded.shards["s1"].state == "pending"
    assert store.names() == ["a"]


def test_update_of_missing_manifest_without_sha_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), ManifestStore(tmp_path).update("nope"):
        pass


def test_failed_update_keeps_previous_state(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    with store.update("a", input_sha256="abc") as manifest:
        manifest.shards["s1"] = _record("s1")
    with pytest.raises(RuntimeError), store.update("a") as manifest:
        manifest.shards["s1"].batch_id = "batch_x"
        raise RuntimeError("crash before save")
    assert store.load("a").shards["s1"].batch_id is None


def test_record_and_derived_state(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    with store.update("a", input_sha256="abc") as manifest:
        manifest.shards["s1"] = _record("s1")
        manifest.shards["s2"] = _record("s2")
    store.record("a", "s1", state="submitted", batch_id="b1", terminal=True)
    manifest = store.load("a")
    assert not manifest.all_terminal
    assert manifest.batch_ids == ["b1"]
    store.record("a", "s2", state="submitted", batch_id="b2", terminal=True)
    assert store.load("a").all_terminal


def _bump(directory: str, n: int) -> None:
    store = ManifestStore(Path(directory))
    for _ in range(n):
        with store.update("a") as manifest:
            manifest.shards["s1"].request_count += 1


def test_concurrent_updates_are_serialized(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    with store.update("a", input_sha256="abc") as manifest:
        manifest.shards["s1"] = _record("s1")
    procs = [multiprocessing.Process(target=_bump, args=(str(tmp_path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert store.load("a").shards["s1"].request_count == 3 + 100
