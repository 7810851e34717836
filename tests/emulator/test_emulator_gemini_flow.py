"""The Gemini provider on /v1: `batches/` ids, states and counts as Bifrost maps them, flattened
results, the `info` item, Gemini files, conversion of inline bodies, cancel and expiry."""

from __future__ import annotations

import json

import httpx
from emulator_helpers import (
    check_schema,
    jsonl,
    path_id,
    results,
    retrieve,
    upload,
    wait_progress,
    wait_terminal,
)

from batch_pipeline.emulator import fake_native
from batch_pipeline.emulator.fake_model import reply_text
from batch_pipeline.emulator.google_requests import to_gemini_request

GEMINI = {"provider": "gemini"}


def _item(custom_id: str, text: str, **body: object) -> dict:
    return {
        "custom_id": custom_id,
        "body": {"messages": [{"role": "user", "content": text}], **body},
    }


def _create(http: httpx.Client, **body: object) -> dict:
    response = http.post("/v1/batches", json={"model": "gemini/gemini-2.5-flash", **body})
    assert response.status_code == 200, response.text
    return check_schema(response.json(), "BatchCreateResponse")


def test_inline_batch_runs_to_flattened_results(http: httpx.Client) -> None:
    created = _create(
        http,
        requests=[
            _item("a", "Hello there"),
            _item("b", "broken [[fail:429]]"),
            _item("c", "short", generationConfig={"maxOutputTokens": 1}),
            {
                "custom_id": "d",
                "body": {"messages": [{"role": "user", "content": "x"}]},
                "params": {},
            },
        ],
        endpoint="/v1/chat/completions",
    )
    assert created["id"].startswith("batches/") and created["operation_name"] == created["id"]
    assert created["status"] == "in_progress" and "expires_at" not in created
    assert created["extra_fields"]["provider"] == "gemini"

    batch = wait_terminal(http, created["id"], "gemini")
    assert batch["status"] == "completed" and batch["done"] is True
    # Bifrost's reading of batchStats: `completed` counts the failure too.
    assert batch["request_counts"] == {"total": 4, "completed": 4, "failed": 1, "succeeded": 3}

    body = check_schema(results(http, created["id"], "gemini").json(), "BatchResultsResponse")
    items = {item["custom_id"]: item for item in body["results"]}
    text, tokens, _ = reply_text("gemini-2.5-flash", "Hello there", None)
    assert items["a"]["response"] == {
        "status_code": 200,
        "body": {
            "text": text,
            "finish_reason": "STOP",
            "usage": {
                "prompt_tokens": 2,
                "completion_tokens": tokens,
                "total_tokens": 2 + tokens,
            },
        },
    }
    assert items["b"] == {
        "custom_id": "b",
        "error": {"code": "429", "message": "Injected failure: HTTP 429 ([[fail:429]])."},
    }
    assert items["c"]["response"]["body"]["finish_reason"] == "MAX_TOKENS"


def test_results_refused_while_running_and_bare_ids_accepted(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=5))
    created = _create(http, requests=[_item(f"r{i}", "x") for i in range(30)])
    refused = results(http, created["id"], "gemini")
    assert refused.status_code == 500
    message = check_schema(refused.json(), "BifrostError")["error"]["message"]
    assert message.startswith(f"batch {created['id']} is still processing (state: BATCH_STATE_")
    bare = created["id"].removeprefix("batches/")
    assert retrieve(http, bare, "gemini")["id"] == created["id"]
    listed = http.get("/v1/batches", params=GEMINI).json()
    item = listed["data"][0]
    assert set(item) == {"id", "object", "status", "created_at", "operation_name", "extra_fields"}
    assert item["extra_fields"]["request_type"] == "batch_retrieve"


def test_openai_parameters_are_not_mapped_native_config_is_kept() -> None:
    converted = to_gemini_request(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ],
            "max_tokens": 5,
            "temperature": 0.1,
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 256},
        }
    )
    assert converted == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.5, "maxOutputTokens": 256},
    }


def test_params_only_items_are_empty_requests(http: httpx.Client) -> None:
    """The Gemini provider reads `body` only: an item with just `params` has no contents."""
    created = _create(
        http,
        requests=[{"custom_id": "p", "params": {"messages": [{"role": "user", "content": "x"}]}}],
    )
    wait_terminal(http, created["id"], "gemini")
    (item,) = results(http, created["id"], "gemini").json()["results"]
    assert item["custom_id"] == "p" and item["error"]["code"] == "400"


def test_file_batch_default_model_and_files_api(http: httpx.Client) -> None:
    lines = [
        {"key": "k1", "request": {"contents": [{"role": "user", "parts": [{"text": "one"}]}]}},
        {"request": {"contents": [{"role": "user", "parts": [{"text": "two"}]}]}},
    ]
    file_id = upload(http, jsonl(lines), provider="gemini")
    assert file_id.startswith("files/")
    info = http.get(f"/v1/files/{path_id(file_id)}", params=GEMINI).json()
    assert info["purpose"] == "vision" and info["storage_backend"] == "api"
    refused = http.get(f"/v1/files/{path_id(file_id)}/content", params=GEMINI)
    assert refused.status_code == 500
    assert "doesn't support direct content download" in refused.json()["error"]["message"]

    response = http.post(
        "/v1/batches", params=GEMINI, json={"input_file_id": file_id.removeprefix("files/")}
    )
    created = check_schema(response.json(), "BatchCreateResponse")
    assert created["input_file_id"] == file_id
    batch = wait_terminal(http, created["id"], "gemini")
    assert batch["output_file_id"].startswith("files/")
    items = results(http, created["id"], "gemini").json()["results"]
    assert [i["custom_id"] for i in items] == ["k1", "request-1"]
    text, _, _ = reply_text("gemini-2.5-flash", "two", None)
    assert items[1]["response"]["body"]["text"] == text


def test_unreadable_file_fails_with_the_info_item(http: httpx.Client) -> None:
    file_id = upload(http, b'not json\n{"custom_id": "x"}\n', provider="gemini")
    created = _create(http, input_file_id=file_id)
    batch = wait_terminal(http, created["id"], "gemini")
    assert batch["status"] == "failed"
    assert results(http, created["id"], "gemini").json()["results"] == [
        {
            "custom_id": "info",
            "response": {
                "status_code": 200,
                "body": {
                    "message": "Batch completed with state: BATCH_STATE_FAILED. No results available."
                },
            },
        }
    ]


def test_cancel_is_synthetic_and_keeps_answered_results(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=40))
    created = _create(http, requests=[_item(f"r{i}", f"q{i}") for i in range(40)])
    wait_progress(http, created["id"])
    cancel = http.post(f"/v1/batches/{path_id(created['id'])}/cancel", params=GEMINI).json()
    assert {k: cancel[k] for k in ("id", "object", "status")} == {
        "id": created["id"],
        "object": "batch",
        "status": "cancelling",
    }
    assert "request_counts" not in cancel and cancel["cancelling_at"] > 0
    batch = wait_terminal(http, created["id"], "gemini")
    assert batch["status"] == "cancelled"
    items = results(http, created["id"], "gemini").json()["results"]
    assert 0 < len(items) < 40 and all("response" in i for i in items)
    assert batch["request_counts"]["pending"] == 40 - len(items)


def test_expiry_keeps_partial_results(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=20, completion_window_seconds=0.5))
    created = _create(http, requests=[_item(f"r{i}", f"q{i}") for i in range(40)])
    batch = wait_terminal(http, created["id"], "gemini")
    assert batch["status"] == "expired" and batch["done"] is True
    items = results(http, created["id"], "gemini").json()["results"]
    assert 0 < len(items) == batch["request_counts"]["completed"] < 40


def test_structured_output_from_native_generation_config() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"label": {"type": "STRING", "enum": ["a", "b"]}},
        "required": ["label"],
    }
    body = {
        "contents": [{"role": "user", "parts": [{"text": "classify"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    answer = fake_native.generate_content(body, model="gemini-2.5-flash", seed_key="k")
    assert json.loads(answer["candidates"][0]["content"]["parts"][0]["text"])["label"] in ("a", "b")
