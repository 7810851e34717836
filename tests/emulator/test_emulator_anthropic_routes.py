"""The `/anthropic` integration driven by the official anthropic SDK: message batches and files,
Anthropic-native bodies; results fetched through the route (the SDK's own `results()` follows
`results_url` to api.anthropic.com, which Bifrost does not proxy)."""

from __future__ import annotations

import time

import anthropic
import pytest

from batch_pipeline.emulator import EmbeddedEmulator

MODEL = "claude-3-5-haiku-latest"


@pytest.fixture
def client(emulator: EmbeddedEmulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{emulator.base_url}/anthropic", api_key="sk-x", max_retries=0
    )


def _request(custom_id: str, text: str) -> dict:
    params = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "params": params}


def _wait(client: anthropic.Anthropic, batch_id: str) -> anthropic.types.MessageBatch:
    deadline = time.monotonic() + 10
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_message_batch_flow(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(
        requests=[_request("request-1", "Hi"), _request("request-2", "x [[fail:400]]")]
    )
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    done = _wait(client, batch.id)
    assert done.request_counts.succeeded == 1 and done.request_counts.errored == 1
    assert done.results_url and done.results_url.startswith("https://api.anthropic.com/")
    body = client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)
    assert {item["custom_id"] for item in body["results"]} == {"request-1", "request-2"}
    assert any(b.id == batch.id for b in client.messages.batches.list(limit=20).data)


def test_cancel_and_files(client: anthropic.Anthropic, emulator: EmbeddedEmulator) -> None:
    import httpx

    httpx.patch(f"{emulator.base_url}/_emulator/config", json={"requests_per_second": 5})
    batch = client.messages.batches.create(requests=[_request(f"r{i}", "x") for i in range(30)])
    cancelled = client.messages.batches.cancel(batch.id)
    assert cancelled.processing_status in ("canceling", "ended")
    assert _wait(client, batch.id).request_counts.canceled > 0

    uploaded = client.beta.files.upload(file=("notes.txt", b"hello", "text/plain"))
    assert uploaded.id.startswith("file_") and uploaded.downloadable is False
    assert any(f.id == uploaded.id for f in client.beta.files.list())
    client.beta.files.delete(uploaded.id)


def test_missing_model_for_another_provider_is_refused(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="model is required"):
        client.messages.batches.create(
            requests=[{"custom_id": "a", "params": {"max_tokens": 5, "messages": []}}],
            extra_headers={"x-model-provider": "bedrock"},
        )
