"""Exactly-once submission against the emulator: reruns, crashes around a create, unknown outcomes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pipeline_support import (
    Overlap,
    anthropic_lines,
    arm,
    chat_lines,
    counters,
    creates_per_shard,
    write_input,
)

from batch_pipeline.gateway import BifrostClient
from batch_pipeline.inputs import InputOptions, InputPlan, ShardLimits, prepare_input
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.submit import (
    INPUT_KEY,
    PARALLEL_UPLOADS,
    SHARD_KEY,
    SubmissionError,
    SubmissionUncertain,
    register_plan,
    submit_plan,
)


def _plan(root: Path, name: str, lines: list, **limits: int) -> InputPlan:
    layout = DataLayout.at(root)
    path = write_input(root, name, lines)
    options = InputOptions(limits={"openai": ShardLimits(**limits)} if limits else {})
    return prepare_input(path, layout.staging(name), options)


@pytest.fixture
def client(emulator):
    with BifrostClient(emulator.base_url, max_retry_seconds=5) as c:
        yield c


def test_one_batch_per_shard_and_rerun_reuses(emulator, client, tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        "many",
        chat_lines(25),
        max_requests=10,
        max_bytes=10**6,
        max_bytes_per_request=10**5,
    )
    store = ManifestStore(tmp_path / "batches")
    first = submit_plan(client, store, plan)
    again = submit_plan(client, store, plan)
    assert len(plan.shards) == 3
    assert [o.reused for o in first] == [False] * 3
    assert [o.reused for o in again] == [True] * 3
    assert [o.batch_id for o in first] == [o.batch_id for o in again]
    assert creates_per_shard(emulator.base_url) == {s.shard_id: 1 for s in plan.shards}
    manifest = store.load("many")
    assert all(r.state == "submitted" and r.batch_id for r in manifest.shards.values())


def test_crash_after_intent_before_create_creates_once(emulator, client, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "a", chat_lines(3))
    store = ManifestStore(tmp_path / "batches")
    register_plan(store, plan)
    shard = plan.shards[0].shard_id
    # the process died after writing the intent, before the create was sent
    store.record("a", shard, state="creating", intent_at=1.0)
    outcomes = submit_plan(client, store, plan)
    assert not outcomes[0].reused
    assert creates_per_shard(emulator.base_url) == {shard: 1}


def test_crash_right_after_create_adopts_the_batch(emulator, client, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "c", chat_lines(4))
    store = ManifestStore(tmp_path / "batches")
    shard = plan.shards[0]
    # the create reached the gateway, then the process died before recording the id
    uploaded = client.upload_file(shard.path, provider="openai")
    made = client.create_batch(
        model="openai/gpt-4o-mini",
        endpoint=shard.endpoint,
        input_file_id=uploaded.id,
        metadata={SHARD_KEY: shard.shard_id, INPUT_KEY: "c"},
    )
    register_plan(store, plan)
    store.record("c", shard.shard_id, state="creating", input_file_id=uploaded.id, intent_at=1.0)
    outcomes = submit_plan(client, store, plan)
    assert outcomes[0].batch_id == made.id and outcomes[0].reused
    assert creates_per_shard(emulator.base_url) == {shard.shard_id: 1}


def test_server_error_on_create_stops_then_rerun_creates_once(
    emulator, client, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, "d", chat_lines(3))
    store = ManifestStore(tmp_path / "batches")
    arm(emulator.base_url, kind="server_error", routes=["batch_create"], count=1, status=502)
    with pytest.raises(SubmissionUncertain, match="may or may not have made a batch"):
        submit_plan(client, store, plan)
    record = store.load("d").shards[plan.shards[0].shard_id]
    assert record.state == "creating" and record.batch_id is None
    with pytest.raises(SubmissionUncertain, match="not listed yet"):
        submit_plan(client, store, plan)  # too soon: a slow create might still show up
    assert counters(emulator.base_url)["batches_created"] == 0
    # once settled: no batch carries the shard id, so create it
    submit_plan(client, store, plan, settle_seconds=0)
    assert creates_per_shard(emulator.base_url) == {plan.shards[0].shard_id: 1}


def test_rate_limited_create_is_asked_again(emulator, client, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "e", chat_lines(3))
    store = ManifestStore(tmp_path / "batches")
    arm(emulator.base_url, kind="rate_limit", routes=["batch_create"], count=2, retry_after=0.1)
    outcomes = submit_plan(client, store, plan)
    assert not outcomes[0].reused
    assert creates_per_shard(emulator.base_url) == {plan.shards[0].shard_id: 1}
    assert counters(emulator.base_url)["faults_fired"]["rate_limit"] == 2


def test_refused_create_clears_the_intent(emulator, client, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "f", chat_lines(2))
    store = ManifestStore(tmp_path / "batches")
    register_plan(store, plan)
    store.record("f", plan.shards[0].shard_id, input_file_id="file-does-not-exist")
    with pytest.raises(SubmissionError, match="refused"):
        submit_plan(client, store, plan)
    record = store.load("f").shards[plan.shards[0].shard_id]
    assert record.state == "pending" and record.intent_at is None
    assert record.input_file_id is None  # the refused upload is not reused
    assert counters(emulator.base_url)["batches_created"] == 0
    submit_plan(client, store, plan)  # uploads again and creates
    assert creates_per_shard(emulator.base_url) == {plan.shards[0].shard_id: 1}


def test_anthropic_unknown_outcome_stops_until_resolved(emulator, client, tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    path = write_input(tmp_path, "claude", anthropic_lines(3))
    plan = prepare_input(path, layout.staging("claude"), InputOptions())
    store = ManifestStore(tmp_path / "batches")
    register_plan(store, plan)
    shard = plan.shards[0].shard_id
    store.record("claude", shard, state="creating", intent_at=1.0)
    with pytest.raises(SubmissionUncertain, match="keeps no batch metadata") as info:
        submit_plan(client, store, plan)
    assert "assume_not_created" in str(info.value) and "\n" not in str(info.value)
    assert counters(emulator.base_url)["batches_created"] == 0
    outcomes = submit_plan(client, store, plan, assume_not_created=[shard])
    assert not outcomes[0].reused
    assert counters(emulator.base_url)["batches_created"] == 1


def test_changed_input_after_submission_is_refused(emulator, client, tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "batches")
    submit_plan(client, store, _plan(tmp_path, "g", chat_lines(3)))
    changed = _plan(tmp_path, "g", chat_lines(4))
    with pytest.raises(SubmissionError, match="changed after its batches were submitted"):
        submit_plan(client, store, changed)


def test_two_submits_of_one_file_never_run_at_once(emulator, client, tmp_path: Path) -> None:
    plan = _plan(tmp_path, "h", chat_lines(3))
    store = ManifestStore(tmp_path / "batches")
    with store.exclusive("h", "submit"), pytest.raises(SubmissionError, match="another submit"):
        submit_plan(client, store, plan)
    assert counters(emulator.base_url)["files_uploaded"] == 0
    submit_plan(client, store, plan)
    assert creates_per_shard(emulator.base_url) == {plan.shards[0].shard_id: 1}


def test_cancel_during_a_create_cancels_the_batch_it_made(emulator, client, tmp_path: Path) -> None:
    from batch_pipeline.operations.cancel import cancel_partition

    plan = _plan(
        tmp_path, "k", chat_lines(3), max_requests=1, max_bytes=10**6, max_bytes_per_request=10**5
    )
    store = ManifestStore(tmp_path / "batches")
    register_plan(store, plan)
    first, second, third = (s.shard_id for s in plan.shards)
    store.record("k", first, state="creating", intent_at=1.0)  # its create is "in flight"
    report = cancel_partition(client, store, "k")
    assert sorted(report.never_submitted) == sorted([second, third])
    submit_plan(client, store, plan)  # the in-flight create lands: its batch is cancelled at once
    manifest = store.load("k")
    assert manifest.shards[first].batch_id and manifest.shards[first].status in (
        "cancelling",
        "cancelled",
    )
    assert manifest.shards[second].batch_id is None and manifest.shards[second].terminal
    assert counters(emulator.base_url)["batches_created"] == 1


def test_plan_is_frozen_once_shards_were_sent(emulator, client, tmp_path: Path) -> None:
    from batch_pipeline.operations.submit import plan_to_submit

    layout = DataLayout.at(tmp_path)
    path = write_input(tmp_path, "m", chat_lines(6))
    store = ManifestStore(tmp_path / "batches")
    small = InputOptions(
        limits={"openai": ShardLimits(max_requests=2, max_bytes=10**6, max_bytes_per_request=10**5)}
    )
    plan = plan_to_submit(store, "m", path, layout.staging("m"), small)
    submit_plan(client, store, plan)
    # other sharding settings later: the submitted plan stands (re-sharding would orphan batches)
    again = plan_to_submit(store, "m", path, layout.staging("m"), InputOptions())
    assert [s.shard_id for s in again.shards] == [s.shard_id for s in plan.shards]
    # a changed file is refused, and its staging is left as submitted
    write_input(tmp_path, "m", chat_lines(7))
    with pytest.raises(SubmissionError, match="changed after its batches were submitted"):
        plan_to_submit(store, "m", path, layout.staging("m"), small)
    assert InputPlan.load(layout.staging("m")).input_sha256 == plan.input_sha256


def test_two_collects_of_one_file_never_run_at_once(emulator, client, tmp_path: Path) -> None:
    from batch_pipeline.operations.collect import CollectError, collect_partition

    layout = DataLayout.at(tmp_path)
    plan = prepare_input(
        write_input(tmp_path, "n", chat_lines(2)), layout.staging("n"), InputOptions()
    )
    store = ManifestStore(tmp_path / "batches")
    submit_plan(client, store, plan)
    with store.exclusive("n", "collect"), pytest.raises(CollectError, match="another collect"):
        collect_partition(client, layout, store, "n")


def test_an_intent_written_by_another_submit_stops_this_one(
    emulator, client, tmp_path: Path, monkeypatch
) -> None:
    """If another submit got in (a lease lost on S3) and wrote its intent while this one was
    uploading, this one stops before its create: only one may create a shard."""
    plan = _plan(tmp_path, "raced", chat_lines(2))
    store = ManifestStore(tmp_path / "batches")
    (shard,) = plan.shards
    upload = client.upload_file

    def upload_then_race(*args, **kwargs):
        uploaded = upload(*args, **kwargs)
        store.record("raced", shard.shard_id, state="creating", intent_at=123.0)
        return uploaded

    monkeypatch.setattr(client, "upload_file", upload_then_race)
    with pytest.raises(SubmissionUncertain, match="another submit is creating shard"):
        submit_plan(client, store, plan)
    assert counters(emulator.base_url)["batches_created"] == 0
    assert store.load("raced").shards[shard.shard_id].intent_at == 123.0  # theirs, untouched


def _six_shards(root: Path, name: str) -> InputPlan:
    limits = {"max_requests": 5, "max_bytes": 10**6, "max_bytes_per_request": 10**5}
    return _plan(root, name, chat_lines(30), **limits)


def test_uploads_run_a_few_at_once_ahead_of_the_creates(
    emulator, client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard files upload concurrently (at most PARALLEL_UPLOADS), each batch is created once
    from its own shard's file."""
    plan = _six_shards(tmp_path, "wide")
    uploads = Overlap()
    monkeypatch.setattr(BifrostClient, "upload_file", uploads.wrap(BifrostClient.upload_file))
    store = ManifestStore(tmp_path / "batches")
    outcomes = submit_plan(client, store, plan)
    assert uploads.calls == 6 and 2 <= uploads.most <= PARALLEL_UPLOADS
    assert creates_per_shard(emulator.base_url) == {s.shard_id: 1 for s in plan.shards}
    manifest = store.load("wide")
    for shard, outcome in zip(plan.shards, outcomes, strict=True):
        batch = client.retrieve_batch(outcome.batch_id, provider="openai")
        assert batch.input_file_id == manifest.shards[shard.shard_id].input_file_id
        sent = tmp_path / f"sent-{shard.shard_id}.jsonl"
        client.download_file_content(batch.input_file_id, provider="openai", dest=sent)
        assert sent.read_bytes() == Path(shard.path).read_bytes()  # its own shard's requests


def test_a_refused_create_keeps_the_uploads_it_did_not_reach(
    emulator, client, tmp_path: Path
) -> None:
    """The second create is refused: the uploads already made for the shards after it are
    recorded, so the next submit uploads only the refused shard again."""
    plan = _six_shards(tmp_path, "refused")
    store = ManifestStore(tmp_path / "batches")
    arm(emulator.base_url, kind="not_found", routes=["batch_create"], skip=1, count=1)
    with pytest.raises(SubmissionError, match="refused"):
        submit_plan(client, store, plan)
    records = list(store.load("refused").shards.values())
    assert records[0].batch_id and not records[1].input_file_id
    assert all(r.input_file_id and not r.batch_id for r in records[2:])
    assert counters(emulator.base_url)["files_uploaded"] == 6
    submit_plan(client, store, plan)
    assert counters(emulator.base_url)["files_uploaded"] == 7
    assert creates_per_shard(emulator.base_url) == {s.shard_id: 1 for s in plan.shards}


def test_an_interrupt_does_not_wait_for_the_uploads_under_way(
    emulator, client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or a run's termination) during a create returns at once: the uploads still
    travelling are left to end (and be recorded) on their own."""
    plan = _six_shards(tmp_path, "stopped")
    store = ManifestStore(tmp_path / "batches")
    first = plan.shards[0].shard_id
    released = threading.Event()
    upload = BifrostClient.upload_file

    def held_but_the_first(self: BifrostClient, path, *args, **kwargs):
        if first not in str(path):
            released.wait(timeout=60)  # under way until the test ends
        return upload(self, path, *args, **kwargs)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(BifrostClient, "upload_file", held_but_the_first)
    monkeypatch.setattr(BifrostClient, "create_batch", interrupted)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            submit_plan(client, store, plan)
        assert time.monotonic() - started < 30.0  # not the 60 s the other uploads are held
        records = list(store.load("stopped").shards.values())
        assert records[0].input_file_id and records[0].batch_id is None
        assert not any(r.input_file_id for r in records[1:])
    finally:
        released.set()


def test_each_upload_is_recorded_as_it_ends_before_the_creates(
    emulator, client, tmp_path: Path
) -> None:
    """While the first create is held, the other shards' uploads end and their file ids are
    already in the manifest: a crash then leaves no finished upload unrecorded."""
    plan = _six_shards(tmp_path, "early")
    store = ManifestStore(tmp_path / "batches")
    arm(emulator.base_url, kind="slow", routes=["batch_create"], count=1, delay=5.0)
    submitting = threading.Thread(target=submit_plan, args=(client, store, plan))
    submitting.start()
    try:
        deadline = time.monotonic() + 30
        while counters(emulator.base_url)["files_uploaded"] < 6:
            assert time.monotonic() < deadline, "the uploads never ended"
            time.sleep(0.05)
        records = store.load("early").shards.values()
        while not all(r.input_file_id for r in records):  # recorded right after each upload
            assert time.monotonic() < deadline, "the file ids were never recorded"
            time.sleep(0.05)
            records = store.load("early").shards.values()
        assert counters(emulator.base_url)["batches_created"] <= 1  # the first create is held
    finally:
        submitting.join(timeout=60)
    assert creates_per_shard(emulator.base_url) == {s.shard_id: 1 for s in plan.shards}


def test_an_upload_ending_after_another_submit_recorded_the_shard_keeps_that_file(
    emulator, client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another submit (one that took the lock over) recorded its own file for a shard while
    ours was still uploading it: ours overwrites nothing and the batch is made from the
    recorded file, so the manifest always names the batch's input."""
    plan = _six_shards(tmp_path, "taken")
    store = ManifestStore(tmp_path / "batches")
    contested = plan.shards[2]
    theirs: list[str] = []
    upload = BifrostClient.upload_file

    def theirs_recorded_first(self: BifrostClient, path, *args, **kwargs):
        ours = upload(self, path, *args, **kwargs)
        if contested.shard_id in str(path):
            theirs.append(upload(self, path, *args, **kwargs).id)
            store.record("taken", contested.shard_id, input_file_id=theirs[0])
        return ours

    monkeypatch.setattr(BifrostClient, "upload_file", theirs_recorded_first)
    outcomes = submit_plan(client, store, plan)
    record = store.load("taken").shards[contested.shard_id]  # type: ignore[union-attr]
    assert record.input_file_id == theirs[0]
    [made] = [o.batch_id for o in outcomes if o.shard_id == contested.shard_id]
    assert client.retrieve_batch(made, provider="openai").input_file_id == theirs[0]
