"""Azure blob input on /v1: `input_blob` + `output_folder`, output written as blobs, /results
read from the output blob; and the Azure Blob routes (Put, Get and Delete Blob) over the same
store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
from emulator_helpers import chat_line, jsonl, results

from batch_pipeline.emulator import EmbeddedEmulator

ACCOUNT = "https://acct.blob.core.windows.net/batches"
BLOB_ROUTE = "/azure-blob/acct/batches"
SAS = {"sv": "2024-08-04", "sp": "rw", "sig": "c2lnbmF0dXJl"}
BLOCK = {"x-ms-blob-type": "BlockBlob", "x-ms-version": "2023-11-03"}


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


def test_put_blob_feeds_a_batch_and_get_blob_reads_its_error_blob(http: httpx.Client) -> None:
    lines = [chat_line("a", "Hello"), chat_line("b", "no [[fail:429]]")]
    put = http.put(f"{BLOB_ROUTE}/in/x.jsonl", params=SAS, headers=BLOCK, content=jsonl(lines))
    assert put.status_code == 201 and put.headers["etag"] and put.headers["content-md5"]
    created = http.post(
        "/v1/batches",
        json={
            "model": "azure/gpt-4o-mini",
            "input_blob": f"{ACCOUNT}/in/x.jsonl",
            "output_folder": {"url": f"{ACCOUNT}/out"},
            "endpoint": "/v1/chat/completions",
        },
    ).json()
    batch = _wait(http, created["id"])
    error_path = batch["error_blob"].removeprefix(ACCOUNT)
    got = http.get(f"{BLOB_ROUTE}{error_path}", params=SAS)
    assert got.status_code == 200 and got.headers["x-ms-blob-type"] == "BlockBlob"
    assert [line["custom_id"] for line in _lines(got.content)] == ["b"]
    again = http.get(f"{BLOB_ROUTE}/in/x.jsonl", params=SAS)
    assert again.content == jsonl(lines)


def test_delete_blob_removes_it_once(http: httpx.Client) -> None:
    http.put(f"{BLOB_ROUTE}/in/d.jsonl", params=SAS, headers=BLOCK, content=b"{}\n")
    unsigned = http.delete(f"{BLOB_ROUTE}/in/d.jsonl")
    assert unsigned.status_code == 401
    deleted = http.delete(f"{BLOB_ROUTE}/in/d.jsonl", params=SAS)
    assert deleted.status_code == 202 and deleted.content == b""
    assert http.get(f"{BLOB_ROUTE}/in/d.jsonl", params=SAS).status_code == 404
    listed = http.get("/_emulator/objects", params={"prefix": f"{ACCOUNT}/in/"}).json()
    assert f"{ACCOUNT}/in/d.jsonl" not in listed["objects"]
    again = http.delete(f"{BLOB_ROUTE}/in/d.jsonl", params=SAS)
    assert again.status_code == 404 and again.headers["x-ms-error-code"] == "BlobNotFound"


def test_blob_routes_answer_azure_errors(http: httpx.Client) -> None:
    unsigned = http.put(f"{BLOB_ROUTE}/in/y.jsonl", headers=BLOCK, content=b"{}\n")
    assert unsigned.status_code == 401
    assert unsigned.headers["x-ms-error-code"] == "NoAuthenticationInformation"
    assert b"<Code>NoAuthenticationInformation</Code>" in unsigned.content
    untyped = http.put(f"{BLOB_ROUTE}/in/y.jsonl", params=SAS, content=b"{}\n")
    assert untyped.headers["x-ms-error-code"] == "MissingRequiredHeader"
    append = http.put(
        f"{BLOB_ROUTE}/in/y.jsonl",
        params=SAS,
        headers={**BLOCK, "x-ms-blob-type": "AppendBlob"},
        content=b"{}\n",
    )
    assert append.headers["x-ms-error-code"] == "InvalidHeaderValue"
    damaged = http.put(
        f"{BLOB_ROUTE}/in/y.jsonl",
        params=SAS,
        headers={**BLOCK, "content-md5": "AAAAAAAAAAAAAAAAAAAAAA=="},
        content=b"{}\n",
    )
    assert damaged.headers["x-ms-error-code"] == "Md5Mismatch"
    bad_container = http.put("/azure-blob/acct/Bad_Name/y.jsonl", params=SAS, headers=BLOCK)
    assert bad_container.headers["x-ms-error-code"] == "InvalidResourceName"
    missing = http.get(f"{BLOB_ROUTE}/in/y.jsonl", params=SAS)
    assert missing.status_code == 404 and missing.headers["x-ms-error-code"] == "BlobNotFound"
    assert http.post(f"{BLOB_ROUTE}/in/y.jsonl", params=SAS).status_code == 405


def test_blob_routes_take_a_sas_not_the_gateway_key_and_take_faults(
    emulator_factory: Callable[..., EmbeddedEmulator],
    client_for: Callable[[EmbeddedEmulator], httpx.Client],
) -> None:
    http = client_for(emulator_factory(api_keys=("gateway-key",)))
    assert http.get("/v1/batches", params={"provider": "azure"}).status_code == 401
    http.post(
        "/_emulator/faults", json={"kind": "server_error", "status": 503, "routes": ["blob_put"]}
    )
    busy = http.put(f"{BLOB_ROUTE}/in/z.jsonl", params=SAS, headers=BLOCK, content=b"{}\n")
    assert busy.status_code == 503 and busy.headers["x-ms-error-code"] == "ServerBusy"
    put = http.put(f"{BLOB_ROUTE}/in/z.jsonl", params=SAS, headers=BLOCK, content=b"{}\n")
    assert put.status_code == 201
    stored = http.get("/_emulator/objects", params={"uri": f"{ACCOUNT}/in/z.jsonl"})
    assert stored.content == b"{}\n"


def _lines(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.splitlines() if line.strip()]
