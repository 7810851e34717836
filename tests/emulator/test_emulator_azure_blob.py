"""Azure blob input on /v1: `input_blob` + `output_folder`, output written as blobs, /results
read from the output blob."""

from __future__ import annotations

import time

import httpx
from emulator_helpers import chat_line, jsonl, results

ACCOUNT = "https://acct.blob.core.windows.net/batches"


def test_blob_batch_runs_to_output_blobs(http: httpx.Client) -> None:
    lines = [chat_line("a", "Hello"), chat_line("b", "no [[fail:500]]")]
    put = http.put(
        "/_emulator/objects", params={"uri": f"{ACCOUNT}/in/input.jsonl"}, content=jsonl(lines)
    )
    assert put.status_code == 200
    response = http.post(
        "/v1/batches",
        json={
            "model": "azure/gpt-4o-mini",
            "input_blob": f"{ACCOUNT}/in/input.jsonl",
            "output_folder": {"url": f"{ACCOUNT}/out"},
            "endpoint": "/v1/chat/completions",
        },
    )
    # the published spec predates input_blob/output_blob/error_blob (newer Bifrost)
    created = response.json()
    assert created["input_blob"] == f"{ACCOUNT}/in/input.jsonl" and "input_file_id" not in created
    batch = _wait(http, created["id"])
    assert batch["status"] == "completed" and "output_file_id" not in batch
    assert batch["output_blob"] == f"{ACCOUNT}/out/{created['id']}/output.jsonl"
    assert batch["error_blob"] == f"{ACCOUNT}/out/{created['id']}/error.jsonl"
    items = results(http, created["id"], "azure").json()["results"]
    assert [i["custom_id"] for i in items] == ["a"]
    error_blob = http.get("/_emulator/objects", params={"uri": batch["error_blob"]})
    assert b'"custom_id":"b"' in error_blob.content


def test_blob_needs_output_folder_and_existing_blob(http: httpx.Client) -> None:
    body = {
        "model": "azure/gpt-4o-mini",
        "input_blob": f"{ACCOUNT}/nope.jsonl",
        "endpoint": "/v1/chat/completions",
    }
    assert http.post("/v1/batches", json=body).status_code == 400
    body["output_folder"] = {"url": f"{ACCOUNT}/out"}
    missing = http.post("/v1/batches", json=body)
    assert missing.status_code == 400 and "does not exist" in missing.json()["error"]["message"]


def _wait(http: httpx.Client, batch_id: str) -> dict:
    """Poll without the spec check (blob fields are newer than the spec)."""
    deadline = time.monotonic() + 10
    while True:
        batch = http.get(f"/v1/batches/{batch_id}", params={"provider": "azure"}).json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline
        time.sleep(0.02)
