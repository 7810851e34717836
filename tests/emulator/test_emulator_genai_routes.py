"""The `/genai` integration driven by the official google-genai SDK: inline and file batches,
resumable upload, get, list, cancel, delete, as Bifrost's own SDK tests call them."""

from __future__ import annotations

import time

import pytest
from google import genai
from google.genai import types

from batch_pipeline.emulator import EmbeddedEmulator


@pytest.fixture
def client(emulator: EmbeddedEmulator) -> genai.Client:
    return genai.Client(
        api_key="x", http_options=types.HttpOptions(base_url=f"{emulator.base_url}/genai")
    )


def _wait(client: genai.Client, name: str) -> types.BatchJob:
    deadline = time.monotonic() + 10
    while True:
        job = client.batches.get(name=name)
        if job.done:
            return job
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_inline_batch_flow(client: genai.Client) -> None:
    src = [{"contents": [{"parts": [{"text": "Hello"}], "role": "user"}]}] * 2
    job = client.batches.create(model="gemini-2.5-flash", src=src)
    assert job.name.startswith("batches/") and job.state.name in (
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
    )
    done = _wait(client, job.name)
    assert done.state.name == "JOB_STATE_SUCCEEDED"
    responses = done.dest.inlined_responses
    assert len(responses) == 2 and responses[0].response.text
    names = [
        j.name for j in client.batches.list(config=types.ListBatchJobsConfig(page_size=10)).page
    ]
    assert job.name in names
    client.batches.delete(name=job.name)


def test_file_batch_and_cancel(client: genai.Client, tmp_path, emulator: EmbeddedEmulator) -> None:
    import httpx

    path = tmp_path / "batch.jsonl"
    path.write_text(
        "".join(
            f'{{"key":"request_{i}","request":{{"contents":[{{"parts":[{{"text":"q{i}"}}],"role":"user"}}]}}}}\n'
            for i in range(30)
        )
    )
    uploaded = client.files.upload(
        file=str(path),
        config=types.UploadFileConfig(
            display_name="batch_test_gemini", mime_type="application/jsonl"
        ),
    )
    assert uploaded.name.startswith("files/") and uploaded.display_name == "batch_test_gemini"
    httpx.patch(f"{emulator.base_url}/_emulator/config", json={"requests_per_second": 5})
    job = client.batches.create(model="gemini/gemini-2.5-flash", src=uploaded.name)
    client.batches.cancel(name=job.name)
    done = _wait(client, job.name)
    assert done.state.name == "JOB_STATE_CANCELLED"
    assert client.files.get(name=uploaded.name).size_bytes == path.stat().st_size
    client.files.delete(name=uploaded.name)
