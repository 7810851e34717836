"""The data root's operations on local disk and on a real S3-compatible server (moto)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from batch_pipeline.ledger import storage
from batch_pipeline.ledger.manifest import ManifestBusy, ManifestStore, ShardRecord
from batch_pipeline.ledger.storage import (
    LockBusy,
    StorageError,
    atomic_write,
    create_once,
    data_root,
    is_local,
    list_names,
    local_copy,
    lock,
    read_parquet,
)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path):
    """The same tests on a local folder and on an s3:// bucket."""
    if request.param == "local":
        return data_root(tmp_path / "data")
    bucket = request.getfixturevalue("s3_bucket")
    return data_root(bucket.url())


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("data", True),
        ("file:///tmp/x", True),
        ("s3://bucket/prefix/", False),
        ("s3://bucket", False),
    ],
)
def test_data_root_is_a_folder_or_an_s3_url(text: str, local: bool) -> None:
    root = data_root(text)
    assert is_local(root) is local
    if not local:
        assert str(root / "inbox") == text.rstrip("/") + "/inbox"


@pytest.mark.parametrize("text", ["gs://bucket/x", "s3://", "ftp://host/x"])
def test_data_root_refuses_what_it_cannot_lock(text: str) -> None:
    with pytest.raises(StorageError, match="s3://"):
        data_root(text)


def test_atomic_write_is_all_or_nothing(root) -> None:
    target = root / "batches" / "a.json"
    with atomic_write(target) as out:
        out.write(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as out:
        out.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [name for name, _ in list_names(root / "batches")] == ["a.json"]


def _race_create_once(target, writers: int = 8) -> list[bytes]:
    """The data of those of `writers` threads, started together, whose create_once got in."""
    ready = threading.Barrier(writers, timeout=10)
    won: list[bytes] = []

    def write(n: int) -> None:
        ready.wait()
        if create_once(target, b"writer-%d" % n):
            won.append(b"writer-%d" % n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_create_once_lets_exactly_one_of_racing_writers_in(root) -> None:
    target = root / "inputs" / "by_sha256" / "ab.json"
    won = _race_create_once(target)
    assert len(won) == 1 and target.read_bytes() == won[0]
    assert create_once(target, b"late") is False and target.read_bytes() == won[0]
    assert [p.name for p in target.parent.iterdir()] == ["ab.json"]  # no temp file left


def test_create_once_without_hard_links_still_lets_one_writer_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(storage.os, "link", no_links)
    target = data_root(tmp_path / "data") / "inputs" / "by_sha256" / "ab.json"
    won = _race_create_once(target)
    assert len(won) == 1 and target.read_bytes() == won[0]
    assert [p.name for p in target.parent.iterdir()] == ["ab.json"]


def test_list_names_pages_after_a_cursor(root) -> None:
    for name in ("c.jsonl", "a.jsonl", "b.jsonl", "d.jsonl"):
        with atomic_write(root / "inbox" / name) as out:
            out.write(b"{}\n")
    with atomic_write(root / "inbox" / "sub" / "x.jsonl") as out:  # not directly in the inbox
        out.write(b"{}\n")
    first = list_names(root / "inbox", limit=3)
    assert [n for n, _ in first] == ["a.jsonl", "b.jsonl", "c.jsonl"]
    assert all(isinstance(mtime, float) and mtime > 0 for _, mtime in first)
    assert [n for n, _ in list_names(root / "inbox", after="c.jsonl", limit=3)] == ["d.jsonl"]
    assert list_names(root / "missing") == []


def test_list_names_asks_for_one_prefix(root) -> None:
    """What an outcomes build lists: one original's folders, not every file's."""
    for name in ("a", "a.retry-1", "ab", "b"):
        with atomic_write(root / "results" / f"input_file={name}" / "part-0.parquet") as out:
            out.write(b"x")
    listed = list_names(root / "results", folders=True, prefix="input_file=a")
    assert [n for n, _ in listed] == ["input_file=a", "input_file=a.retry-1", "input_file=ab"]
    assert list_names(root / "results", folders=True, prefix="input_file=c") == []


def test_parquet_and_local_copies_read_back(root) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = root / "results" / "input_file=a" / "part-0.parquet"
    with atomic_write(target) as out:
        pq.write_table(pa.table({"input_line": [1, 2]}), out)
    assert read_parquet(target, columns=["input_line"]).column(0).to_pylist() == [1, 2]
    with local_copy(target) as copy:
        assert isinstance(copy, Path) and pq.read_table(copy).num_rows == 2
        kept = copy
    assert kept.exists() is is_local(root)  # a copy of an object is removed afterwards


def test_a_held_lock_refuses_a_second_holder_until_released(root) -> None:
    path = root / "batches" / ".a.submit.lock"
    with lock(path, blocking=False), pytest.raises(LockBusy), lock(path, blocking=False):
        pass
    with lock(path, blocking=False):
        pass


def test_manifest_updates_from_many_threads_lose_nothing(root) -> None:
    store = ManifestStore(root / "batches")
    with store.update("f", input_sha256="x") as manifest:
        manifest.shards["s"] = ShardRecord(
            shard_id="s", provider="openai", model="m", endpoint="/v1/x", request_count=0, bytes=0
        )

    def bump() -> None:
        for _ in range(5):
            with store.update("f") as manifest:
                manifest.shards["s"].request_count += 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.load("f").shards["s"].request_count == 20
    with (
        store.exclusive("f", "submit"),
        pytest.raises(ManifestBusy, match="another submit"),
        store.exclusive("f", "submit"),
    ):
        pass
    assert store.names() == ["f"]


LEASE = 1.6  # short enough for a test, long enough for a busy CI machine to renew in time


def test_a_dead_holders_lease_is_taken_over_and_a_live_one_is_renewed(s3_bucket, monkeypatch):
    monkeypatch.setattr(storage, "LEASE_SECONDS", LEASE)
    monkeypatch.setattr(storage, "CLOCK_SKEW_SECONDS", 0.0)
    path = data_root(s3_bucket.url()) / "batches" / ".a.lock"
    dead = storage._Lease(path)
    dead.acquire(blocking=False, timeout=0)
    dead._stop.set()  # the holder stops renewing, as a killed process would
    dead._renewer.join()
    with pytest.raises(LockBusy):
        storage._Lease(path).acquire(blocking=False, timeout=0)
    time.sleep(LEASE + 0.2)
    with lock(path, blocking=False):  # expired: taken over with If-Match, exactly once
        time.sleep(LEASE + 0.2)  # longer than a lease: renewals keep it ours
        with pytest.raises(LockBusy), lock(path, blocking=False):
            pass
        dead.release()  # the old holder must not delete the new holder's lease
        with pytest.raises(LockBusy), lock(path, blocking=False):
            pass


def test_a_failed_renewal_is_tried_again_not_given_up(s3_bucket, monkeypatch) -> None:
    monkeypatch.setattr(storage, "LEASE_SECONDS", LEASE)
    monkeypatch.setattr(storage, "CLOCK_SKEW_SECONDS", 0.0)
    path = data_root(s3_bucket.url()) / "batches" / ".b.lock"
    lease = storage._Lease(path)
    put, failures = lease._put, []

    def flaky_put(**condition: str) -> bool:
        if condition.get("IfMatch") and not failures:
            failures.append(1)
            raise ConnectionError("network blip")
        return put(**condition)

    monkeypatch.setattr(lease, "_put", flaky_put)
    lease.acquire(blocking=False, timeout=0)
    time.sleep(LEASE + 0.2)  # one failed renewal, then renewed again: never expired
    assert failures and lease.etag is not None
    with pytest.raises(LockBusy), lock(path, blocking=False):
        pass
    lease.release()
    with lock(path, blocking=False):
        pass


def test_a_replayed_lease_write_still_counts_as_ours(s3_bucket) -> None:
    """A client may send a PUT again after losing its answer; the replay fails its condition
    against our own write, which must not read as someone else holding the lease."""
    path = data_root(s3_bucket.url()) / "batches" / ".c.lock"
    lease = storage._Lease(path)
    assert lease._put(IfNoneMatch="*")
    first = lease.etag
    assert lease._put(IfNoneMatch="*")  # the replay of the create: 412, yet ours
    assert lease.etag == first
    assert lease._put(IfMatch=first)  # a renewal ...
    assert lease._put(IfMatch=first)  # ... and its replay (412 against our renewal)
    other = storage._Lease(path)
    assert not other._put(IfNoneMatch="*")  # another owner's create still loses
    lease.release()


def test_a_holder_that_lost_its_lease_can_neither_act_nor_overwrite(s3_bucket, monkeypatch):
    monkeypatch.setattr(storage, "LEASE_SECONDS", LEASE)
    monkeypatch.setattr(storage, "CLOCK_SKEW_SECONDS", 0.0)
    root = data_root(s3_bucket.url())
    store = ManifestStore(root / "batches")
    with store.update("f", input_sha256="x") as manifest:
        manifest.shards["s"] = ShardRecord(
            shard_id="s", provider="openai", model="m", endpoint="/v1/x", request_count=0, bytes=0
        )
    stale, version = storage.read_versioned(store.path("f"))
    store.record("f", "s", batch_id="batch_paid")  # a newer writer
    with pytest.raises(storage.LockLost, match="changed by another process"):
        storage.write_versioned(store.path("f"), stale, version)
    assert store.load("f").shards["s"].batch_id == "batch_paid"

    lease = storage._Lease(root / "batches" / ".f.submit.lock")
    lease.acquire(blocking=False, timeout=0)
    lease.check()
    lease._stop.set()  # it stops renewing, as a stalled process does
    lease._renewer.join()
    time.sleep(LEASE * 0.8)
    with pytest.raises(storage.LockLost):
        lease.check()  # before the lease expires for others, it is already not ours to act on
    lease.release()


def test_locks_on_s3_refuse_a_botocore_that_would_drop_the_conditions(monkeypatch) -> None:
    """s3fs silently drops parameters its botocore does not know: the lease would be no lock."""
    import botocore.session

    class OldModel:
        def operation_model(self, name):
            return type("Op", (), {"input_shape": type("Shape", (), {"members": {"Body": 1}})})()

    monkeypatch.setattr(
        botocore.session.Session, "get_service_model", lambda self, name: OldModel()
    )
    storage._require_conditional_writes.cache_clear()
    try:
        with pytest.raises(StorageError, match="cannot send conditional writes"):
            storage._require_conditional_writes()
    finally:
        storage._require_conditional_writes.cache_clear()
