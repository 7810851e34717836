"""The Vertex provider on /v1: resource-name ids, simulated GCS input and output, raw
GenerateContentResponse bodies, custom_id from `labels.bifrost_custom_id`, GCS files."""

from __future__ import annotations

import base64

import httpx
from emulator_helpers import check_schema, jsonl, path_id, results, retrieve, wait_terminal

VERTEX = {"provider": "vertex"}
OUTPUT = {"url": "gs://bucket/predictions"}


def _item(custom_id: str, text: str) -> dict:
    return {"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": text}]}}


def test_required_fields(http: httpx.Client) -> None:
    no_output = http.post(
        "/v1/batches", json={"model": "vertex/gemini-2.5-flash", "requests": [_item("a", "x")]}
    )
    assert no_output.status_code == 500
    assert no_output.json()["error"]["message"] == (
        "output_folder.url (gs:// prefix) is required for Vertex batch API"
    )


def test_inline_job_results_are_raw_responses(http: httpx.Client) -> None:
    response = http.post(
        "/v1/batches",
        json={
            "model": "vertex/gemini-2.5-flash",
            "requests": [_item("a", "Hello"), _item("b", "no [[fail:400]]")],
            "output_folder": OUTPUT,
        },
    )
    created = check_schema(response.json(), "BatchCreateResponse")
    assert created["id"].startswith(
        "projects/123456789012/locations/us-central1/batchPredictionJobs/"
    )
    assert created["status"] == "validating" and created["input_file_id"].startswith(
        "gs://bucket/input/"
    )
    refused = results(http, created["id"], "vertex")
    if refused.status_code != 200:
        assert "batch output is not available yet" in refused.json()["error"]["message"]
    batch = wait_terminal(http, created["id"], "vertex")
    assert batch["status"] == "completed"  # JOB_STATE_PARTIALLY_SUCCEEDED
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert batch["output_file_id"].startswith("gs://bucket/predictions/prediction-model-")
    number = created["id"].rsplit("/", 1)[-1]
    assert retrieve(http, number, "vertex")["id"] == created["id"]
    items = {i["custom_id"]: i for i in results(http, created["id"], "vertex").json()["results"]}
    body = items["a"]["response"]["body"]
    assert body["candidates"][0]["content"]["parts"][0]["text"]
    assert body["usageMetadata"]["promptTokenCount"] == 1
    assert (
        items["b"]["error"]["code"] == "" and "INVALID_ARGUMENT" in items["b"]["error"]["message"]
    )


def test_gcs_file_input_without_labels_has_empty_custom_ids(http: httpx.Client) -> None:
    line = {"request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    missing = http.post(
        "/v1/files",
        params=VERTEX,
        files={"file": ("in.jsonl", jsonl([line]))},
        data={"purpose": "batch"},
    )
    assert missing.status_code == 500 and "gcs_bucket is required" in missing.text
    uploaded = http.post(
        "/v1/files",
        params=VERTEX,
        files={"file": ("in.jsonl", jsonl([line]))},
        data={"purpose": "batch", "gcs_bucket": "bucket"},
    ).json()
    uri = base64.urlsafe_b64decode(uploaded["id"] + "==").decode()
    assert uri.startswith("gs://bucket/vertex-files/") and uploaded["storage_uri"] == uri
    assert http.get(f"/v1/files/{uploaded['id']}/content", params=VERTEX).content == jsonl([line])
    created = http.post(
        "/v1/batches",
        json={"model": "vertex/gemini-2.5-flash", "input_file_id": uri, "output_folder": OUTPUT},
    ).json()
    wait_terminal(http, created["id"], "vertex")
    (item,) = results(http, created["id"], "vertex").json()["results"]
    assert item["custom_id"] == "" and item["response"]["status_code"] == 200
    cancel = http.post(f"/v1/batches/{path_id(created['id'])}/cancel", params=VERTEX)
    assert cancel.status_code == 400
