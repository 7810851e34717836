"""BifrostClient over real HTTP against the local emulator: every route, and every fault the
emulator can inject (429 + Retry-After, 5xx bursts, slow answers, connections cut mid-download)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from batch_pipeline.emulator import EmbeddedEmulator
from batch_pipeline.gateway import (
    AuthenticationError,
    BadRequestError,
    BatchRetrieveResponse,
    BatchView,
    BifrostClient,
    GatewayConnectionError,
    GatewayError,
    GatewayTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
    Timeouts,
    is_terminal,
    iter_result_items,
)

KEY = "sk-bf-HTTP-SECRET-5e6f7a"
CHAT = "/v1/chat/completions"
HAIKU = "claude-3-5-haiku-latest"


def openai_lines(count: int, fail: set[int] = frozenset()) -> str:
    lines = []
    for i in range(count):
        content = f"hello {i}" + (" [[fail:400]]" if i in fail else "")
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
        lines.append({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body})
    return "".join(json.dumps(line) + "\n" for line in lines)


def anthropic_items(count: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"q{i}",
            "params": {
                "model": HAIKU,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"Hi {i}"}],
            },
        }
        for i in range(count)
    ]


def admin(emulator: EmbeddedEmulator, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{emulator.base_url}/_emulator/{path}", json=body)
    response.raise_for_status()
    return response.json()


def arm(emulator: EmbeddedEmulator, **fault: Any) -> None:
    admin(emulator, "POST", "faults", fault)


def route_count(emulator: EmbeddedEmulator, route: str) -> int:
    return admin(emulator, "GET", "counters")["requests_by_route"].get(route, 0)


def wait_terminal(
    client: BifrostClient, batch_id: str, provider: str, timeout: float = 15.0
) -> BatchRetrieveResponse:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.retrieve_batch(batch_id, provider=provider)
        if is_terminal(batch.status, batch.done):
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.02)


@pytest.fixture
def client(emulator: EmbeddedEmulator) -> Iterator[BifrostClient]:
    with BifrostClient(emulator.base_url, max_retry_seconds=10.0) as gateway_client:
        yield gateway_client


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    path = tmp_path / "shard.jsonl"
    path.write_text(openai_lines(6, fail={2}))
    return path


# ------------------------------------------------------------------------------------ files


def test_file_lifecycle(client: BifrostClient, shard: Path, tmp_path: Path) -> None:
    uploaded = client.upload_file(shard, provider="openai", filename="renamed.jsonl")
    assert uploaded.id and uploaded.bytes == shard.stat().st_size
    assert uploaded.filename == "renamed.jsonl" and uploaded.purpose == "batch"
    assert uploaded.extra_fields is not None and uploaded.extra_fields.request_type == "file_upload"

    assert client.retrieve_file(uploaded.id, provider="openai").id == uploaded.id

    copy = tmp_path / "copy" / "shard.jsonl"
    size = client.download_file_content(uploaded.id, provider="openai", dest=copy)
    assert size == shard.stat().st_size and copy.read_bytes() == shard.read_bytes()

    deleted = client.delete_file(uploaded.id, provider="openai")
    assert deleted.deleted is True
    with pytest.raises(NotFoundError, match="file_retrieve"):
        client.retrieve_file(uploaded.id, provider="openai")


def test_file_list_pages_through_every_file(
    client: BifrostClient, emulator: EmbeddedEmulator, shard: Path
) -> None:
    ids = {client.upload_file(shard, provider="openai").id for _ in range(5)}
    client.upload_file(shard, provider="azure")
    listed = [f.id for f in client.list_files(provider="openai", purpose="batch", limit=2)]
    assert sorted(listed) == sorted(ids)
    assert route_count(emulator, "file_list") >= 3


# ---------------------------------------------------------------------------------- batches


def test_file_based_batch_end_to_end(client: BifrostClient, shard: Path, tmp_path: Path) -> None:
    uploaded = client.upload_file(shard, provider="openai")
    created = client.create_batch(
        model="openai/gpt-4o-mini",
        endpoint=CHAT,
        input_file_id=uploaded.id,
        metadata={"shard": "s-1"},
    )
    assert created.status == "validating" and created.metadata == {"shard": "s-1"}
    assert not BatchView.of(created, "openai").terminal

    finished = wait_terminal(client, created.id, "openai")
    view = BatchView.of(finished, "openai")
    assert (view.status, view.results_source) == ("completed", "files")
    assert (view.counts.total, view.counts.succeeded, view.counts.errored) == (6, 5, 1)

    assert view.output_file_id and view.error_file_id
    output, errors = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    client.download_file_content(view.output_file_id, provider="openai", dest=output)
    client.download_file_content(view.error_file_id, provider="openai", dest=errors)
    ok = {json.loads(line)["custom_id"] for line in output.read_text().splitlines()}
    failed = [json.loads(line) for line in errors.read_text().splitlines()]
    assert ok == {"r0", "r1", "r3", "r4", "r5"}
    assert [(e["custom_id"], e["response"]["status_code"]) for e in failed] == [("r2", 400)]

    results = client.batch_results(created.id, provider="openai")
    assert {item.custom_id for item in results.results} == ok
    assert all(item.response and item.response.status_code == 200 for item in results.results)


def test_inline_batch_streamed_from_jsonl(
    client: BifrostClient, emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    requests_file = tmp_path / "inline.jsonl"
    items = anthropic_items(7)
    requests_file.write_text("".join(json.dumps(item) + "\n\n" for item in items))
    created = client.create_batch(
        model=f"anthropic/{HAIKU}", endpoint="/v1/messages", requests_jsonl=requests_file
    )
    assert created.id.startswith("msgbatch_")
    counters = admin(emulator, "GET", "counters")
    assert counters["batches_by_provider"] == {"anthropic": 1}

    finished = wait_terminal(client, created.id, "anthropic")
    view = BatchView.of(finished, "anthropic")
    assert (view.status, view.results_source, view.counts.succeeded) == (
        "ended",
        "results_endpoint",
        7,
    )
    results = client.batch_results(created.id, provider="anthropic")
    assert sorted(item.custom_id for item in results.results) == sorted(
        i["custom_id"] for i in items
    )
    assert all(item.result and item.result.type == "succeeded" for item in results.results)

    saved = tmp_path / "results" / "msgbatch.json"
    assert client.download_batch_results(created.id, provider="anthropic", dest=saved) > 0
    assert list(iter_result_items(saved)) == results.results


def test_inline_batch_from_a_list(client: BifrostClient) -> None:
    created = client.create_batch(
        model=None, provider="anthropic", endpoint="/v1/messages", requests=anthropic_items(2)
    )
    assert wait_terminal(client, created.id, "anthropic").status == "ended"


def test_create_rejected_by_the_gateway(client: BifrostClient, emulator: EmbeddedEmulator) -> None:
    with pytest.raises(BadRequestError, match="requests is required") as info:
        client.create_batch(model="openai/gpt-4o-mini", endpoint=CHAT, requests=[])
    assert str(info.value).startswith("POST /v1/batches: HTTP 400")
    with pytest.raises(NotFoundError, match="file-nope"):
        client.create_batch(model="openai/gpt-4o-mini", endpoint=CHAT, input_file_id="file-nope")
    assert route_count(emulator, "batch_create") == 2


def test_retrieve_batches_sweeps_many_at_once(client: BifrostClient, shard: Path) -> None:
    uploaded = client.upload_file(shard, provider="openai")
    ids = [
        client.create_batch(model="openai/gpt-4o-mini", endpoint=CHAT, input_file_id=uploaded.id).id
        for _ in range(6)
    ]
    found = client.retrieve_batches(
        [(batch_id, "openai") for batch_id in ids] + [("batch_missing", "openai")], max_workers=4
    )
    assert set(found) == {*ids, "batch_missing"}
    assert all(isinstance(found[i], BatchRetrieveResponse) for i in ids)
    assert isinstance(found["batch_missing"], NotFoundError)


def test_list_batches_pages_through_every_batch(
    client: BifrostClient, emulator: EmbeddedEmulator, shard: Path
) -> None:
    uploaded = client.upload_file(shard, provider="openai")
    ids = {
        client.create_batch(model="openai/gpt-4o-mini", endpoint=CHAT, input_file_id=uploaded.id).id
        for _ in range(5)
    }
    listed = [batch.id for batch in client.list_batches(provider="openai", limit=2)]
    assert sorted(listed) == sorted(ids)
    assert route_count(emulator, "batch_list") >= 3


def test_cancel_an_openai_batch(
    emulator_factory: Callable[..., EmbeddedEmulator], shard: Path
) -> None:
    emulator = emulator_factory(requests_per_second=2.0, validation_delay=0.5)
    with BifrostClient(emulator.base_url) as client:
        uploaded = client.upload_file(shard, provider="openai")
        created = client.create_batch(
            model="openai/gpt-4o-mini", endpoint=CHAT, input_file_id=uploaded.id
        )
        cancelling = client.cancel_batch(created.id, provider="openai")
        assert cancelling.status in ("cancelling", "cancelled")
        finished = wait_terminal(client, created.id, "openai")
        assert BatchView.of(finished, "openai").status == "cancelled"


def test_cancel_an_anthropic_batch(emulator_factory: Callable[..., EmbeddedEmulator]) -> None:
    emulator = emulator_factory(requests_per_second=2.0)
    with BifrostClient(emulator.base_url) as client:
        created = client.create_batch(
            model=f"anthropic/{HAIKU}", endpoint="/v1/messages", requests=anthropic_items(6)
        )
        cancelling = client.cancel_batch(created.id, provider="anthropic")
        assert cancelling.object == "message_batch" and cancelling.status == "cancelling"
        view = BatchView.of(wait_terminal(client, created.id, "anthropic"), "anthropic")
        assert view.status == "ended"
        assert view.counts.canceled > 0
        assert view.counts.succeeded + view.counts.canceled == view.counts.total == 6


# ------------------------------------------------------------------------------------- auth


def test_keys_are_required_sent_and_never_leaked(
    emulator_factory: Callable[..., EmbeddedEmulator],
    shard: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = emulator_factory(api_keys=[KEY])
    with caplog.at_level(logging.DEBUG):
        with (
            BifrostClient(emulator.base_url) as anonymous,
            pytest.raises(AuthenticationError, match="virtual key is required") as missing,
        ):
            anonymous.list_files(provider="openai").__next__()
        with (
            BifrostClient(emulator.base_url, api_key=KEY + "x") as wrong,
            pytest.raises(AuthenticationError, match="invalid virtual key") as invalid,
        ):
            wrong.retrieve_batch("b", provider="openai")
        with BifrostClient(emulator.base_url, api_key=KEY) as bearer:
            assert bearer.upload_file(shard, provider="openai").id
            assert KEY not in repr(bearer)
        with BifrostClient(emulator.base_url, virtual_key=KEY) as virtual:
            assert list(virtual.list_files(provider="openai"))
    texts = [str(missing.value), str(invalid.value), repr(invalid.value)]
    texts += [record.getMessage() for record in caplog.records]
    assert any("/v1/files" in text for text in texts)
    assert [text for text in texts if KEY in text] == []


# ----------------------------------------------------------------------------------- faults


def recording_sleeps(client: BifrostClient, *, really_sleep: bool = True) -> list[float]:
    """Record the client's backoff waits; without `really_sleep` they take no time."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if really_sleep:
            time.sleep(seconds)

    client._session.sleep = sleep
    return sleeps


def test_rate_limit_is_retried_after_the_advertised_wait(
    client: BifrostClient, emulator: EmbeddedEmulator, shard: Path
) -> None:
    uploaded = client.upload_file(shard, provider="openai")
    arm(emulator, kind="rate_limit", count=2, retry_after=0.2, routes=["file_retrieve"])
    sleeps = recording_sleeps(client)
    assert client.retrieve_file(uploaded.id, provider="openai").id == uploaded.id
    assert sleeps == [0.2, 0.2]
    assert route_count(emulator, "file_retrieve") == 3


def test_rate_limited_create_is_not_retried(
    client: BifrostClient, emulator: EmbeddedEmulator, shard: Path
) -> None:
    uploaded = client.upload_file(shard, provider="openai")
    arm(emulator, kind="rate_limit", count=1, retry_after=0.1, routes=["batch_create"])
    with pytest.raises(RateLimitError) as info:
        client.create_batch(model="openai/gpt-4o-mini", endpoint=CHAT, input_file_id=uploaded.id)
    assert info.value.retry_after == 0.1
    assert "rate_limit_error (code rate_limit_exceeded)" in str(info.value)
    assert route_count(emulator, "batch_create") == 1
    assert admin(emulator, "GET", "counters")["batches_created"] == 0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_burst_is_ridden_out(
    client: BifrostClient, emulator: EmbeddedEmulator, status: int
) -> None:
    arm(emulator, kind="server_error", count=3, status=status, routes=["file_list"])
    sleeps = recording_sleeps(client, really_sleep=False)
    assert list(client.list_files(provider="openai")) == []
    assert route_count(emulator, "file_list") == 4
    assert len(sleeps) == 3


def test_persistent_server_errors_give_up_within_the_budget(emulator: EmbeddedEmulator) -> None:
    arm(emulator, kind="server_error", count=None, status=503, routes=["batch_list"])
    with (
        BifrostClient(emulator.base_url, max_retry_seconds=0.6) as client,
        pytest.raises(ServerError, match="Injected upstream failure") as info,
    ):
        list(client.list_batches(provider="openai"))
    assert info.value.attempts == route_count(emulator, "batch_list") > 1


def test_slow_answer_past_the_read_timeout(emulator: EmbeddedEmulator, shard: Path) -> None:
    timeouts = Timeouts(connect=2.0, read=0.2, write=2.0, pool=2.0)
    with BifrostClient(emulator.base_url, timeouts=timeouts, max_retry_seconds=0) as client:
        uploaded = client.upload_file(shard, provider="openai")
        arm(emulator, kind="slow", count=1, delay=1.0, routes=["file_retrieve"])
        with pytest.raises(GatewayTimeoutError, match="read timeout") as info:
            client.retrieve_file(uploaded.id, provider="openai")
        assert info.value.request_sent is True


def test_slow_answer_is_retried_for_reads(emulator: EmbeddedEmulator, shard: Path) -> None:
    timeouts = Timeouts(connect=2.0, read=0.2, write=2.0, pool=2.0)
    with BifrostClient(emulator.base_url, timeouts=timeouts) as client:
        uploaded = client.upload_file(shard, provider="openai")
        arm(emulator, kind="slow", count=1, delay=1.0, routes=["file_retrieve"])
        assert client.retrieve_file(uploaded.id, provider="openai").id == uploaded.id


def test_a_call_with_a_deadline_ends_by_it_whatever_the_timeouts(
    emulator: EmbeddedEmulator,
) -> None:
    """A 60 s read timeout and a 30 s retry budget, but 0.5 s left: the call ends by then."""
    with BifrostClient(emulator.base_url, max_retry_seconds=30) as client:
        arm(emulator, kind="slow", count=None, delay=3.0, routes=["batch_retrieve"])
        started = time.monotonic()
        with pytest.raises(GatewayTimeoutError, match="read timeout"):
            client.retrieve_batch("batch_x", provider="openai", deadline=started + 0.5)
        assert 0.5 <= time.monotonic() - started < 1.5
        assert route_count(emulator, "batch_retrieve") == 1  # no retry past the deadline
        with pytest.raises(GatewayTimeoutError, match="deadline passed") as info:
            client.retrieve_batch("batch_x", provider="openai", deadline=time.monotonic())
        assert info.value.request_sent is False
        assert route_count(emulator, "batch_retrieve") == 1


def test_slow_create_is_an_unknown_outcome_not_a_retry(
    emulator: EmbeddedEmulator, shard: Path
) -> None:
    timeouts = Timeouts(connect=2.0, read=0.3, write=2.0, pool=2.0)
    with BifrostClient(emulator.base_url, timeouts=timeouts) as client:
        uploaded = client.upload_file(shard, provider="openai")
        arm(emulator, kind="slow", count=1, delay=0.8, routes=["batch_create"])
        with pytest.raises(GatewayTimeoutError, match="outcome unknown") as info:
            client.create_batch(
                model="openai/gpt-4o-mini", endpoint=CHAT, input_file_id=uploaded.id
            )
        assert info.value.request_sent is True
        assert route_count(emulator, "batch_create") == 1


def test_download_cut_mid_body_restarts_and_completes(
    client: BifrostClient, emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text(openai_lines(400))
    uploaded = client.upload_file(big, provider="openai")
    arm(emulator, kind="reset_download", count=2, after_bytes=5000, routes=["file_content"])
    recording_sleeps(client, really_sleep=False)
    dest = tmp_path / "download" / "big.jsonl"
    assert (
        client.download_file_content(uploaded.id, provider="openai", dest=dest)
        == big.stat().st_size
    )
    assert dest.read_bytes() == big.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["big.jsonl"]
    assert route_count(emulator, "file_content") == 3


def test_download_that_keeps_failing_leaves_nothing_behind(
    emulator: EmbeddedEmulator, tmp_path: Path, shard: Path
) -> None:
    with BifrostClient(emulator.base_url, max_retry_seconds=0.5) as client:
        uploaded = client.upload_file(shard, provider="openai")
        arm(emulator, kind="reset_download", count=None, after_bytes=100, routes=["file_content"])
        out_dir = tmp_path / "download"
        with pytest.raises(GatewayConnectionError) as info:
            client.download_file_content(uploaded.id, provider="openai", dest=out_dir / "x.jsonl")
        assert info.value.request_sent is True
        assert list(out_dir.iterdir()) == []


def test_nothing_listening_is_a_connection_error_before_sending() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        BifrostClient(f"http://127.0.0.1:{port}", max_retry_seconds=0) as client,
        pytest.raises(GatewayConnectionError) as info,
    ):
        client.create_batch(model="openai/m", endpoint=CHAT, input_file_id="f")
    assert info.value.request_sent is False
    assert isinstance(info.value, GatewayError)
