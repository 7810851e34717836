"""The `/openai` integration driven by the official openai SDK, as Bifrost's own SDK tests do:
files and batches per provider, chosen through `extra_body` / `extra_query`."""

from __future__ import annotations

import base64
import time

import openai
import pytest
from emulator_helpers import chat_line, jsonl

from batch_pipeline.emulator import EmbeddedEmulator


@pytest.fixture
def client(emulator: EmbeddedEmulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{emulator.base_url}/openai", api_key="sk-x", max_retries=0)


def _wait(client: openai.OpenAI, batch_id: str, provider: str) -> openai.types.Batch:
    deadline = time.monotonic() + 10
    while True:
        batch = client.batches.retrieve(batch_id, extra_query={"provider": provider})
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_openai_file_batch_flow(client: openai.OpenAI) -> None:
    lines = [chat_line("a", "Hello"), chat_line("b", "World")]
    uploaded = client.files.create(
        file=("batch_input.jsonl", jsonl(lines), "application/jsonl"), purpose="batch"
    )
    assert uploaded.id.startswith("file-") and uploaded.filename == "batch_input.jsonl"
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"k": "v"},
    )
    assert batch.status == "validating" and batch.expires_at == batch.created_at + 86400
    done = _wait(client, batch.id, "openai")
    assert done.status == "completed" and done.request_counts.completed == 2
    output = client.files.content(done.output_file_id).text
    assert sorted(line.split('"custom_id":"')[1][0] for line in output.splitlines()) == ["a", "b"]
    listed = client.batches.list(limit=20)
    assert listed.data[0].id == batch.id
    assert client.files.delete(uploaded.id).deleted is True


def test_cancel_through_extra_body(client: openai.OpenAI, emulator: EmbeddedEmulator) -> None:
    import httpx

    httpx.patch(f"{emulator.base_url}/_emulator/config", json={"requests_per_second": 5})
    uploaded = client.files.create(
        file=("in.jsonl", jsonl([chat_line(f"r{i}", "x") for i in range(30)])), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelled = client.batches.cancel(batch.id, extra_body={"provider": "openai"})
    assert cancelled.status == "cancelling"
    assert _wait(client, batch.id, "openai").status == "cancelled"


def test_gemini_ids_are_rewritten(client: openai.OpenAI) -> None:
    line = {"key": "k", "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    uploaded = client.files.create(
        file=("g.jsonl", jsonl([line]), "application/jsonl"),
        purpose="batch",
        extra_body={"provider": "gemini"},
    )
    assert uploaded.id.startswith("files-")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"provider": "gemini", "model": "gemini-2.5-flash"},
    )
    assert batch.id.startswith("batches-") and batch.input_file_id == uploaded.id
    done = _wait(client, batch.id, "gemini")
    assert done.status == "completed" and done.output_file_id.startswith("files/")


def test_bedrock_ids_are_base64(emulator_factory) -> None:
    emulator = emulator_factory(bedrock_min_records=1, bedrock_role_arn="arn:aws:iam::1:role/r")
    client = openai.OpenAI(base_url=f"{emulator.base_url}/openai", api_key="sk-x", max_retries=0)
    record = {
        "recordId": "r1",
        "modelInput": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
    }
    uploaded = client.files.create(
        file=("in.jsonl", jsonl([record])),
        purpose="batch",
        extra_body={
            "provider": "bedrock",
            "storage_config": {"s3": {"bucket": "b", "prefix": "p"}},
        },
    )
    assert base64.b64decode(uploaded.id).decode() == "s3://b/p/in.jsonl"
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={
            "provider": "bedrock",
            "model": "amazon.nova-lite-v1:0",
            "output_s3_uri": "s3://b/out/",
        },
    )
    assert base64.b64decode(batch.id).decode().startswith("arn:aws:bedrock:")
    done = _wait(client, batch.id, "bedrock")
    assert done.status == "completed" and done.output_file_id == "s3://b/out/"
