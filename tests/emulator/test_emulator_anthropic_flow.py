"""The Anthropic inline flow with plain httpx: ended status, counts, /results items and quirks."""

from __future__ import annotations

import time

import httpx
from emulator_helpers import check_schema, upload, wait_progress, wait_terminal

from batch_pipeline.emulator import EmbeddedEmulator, fingerprint_requests

ANTHROPIC = {"provider": "anthropic"}
MODEL = "anthropic/claude-3-5-haiku-latest"


def _request(custom_id: str, text: str, max_tokens: int = 64) -> dict:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "claude-3-5-haiku-latest",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
        },
    }


def _create(http: httpx.Client, requests: list[dict]) -> dict:
    response = http.post("/v1/batches", json={"model": MODEL, "requests": requests})
    assert response.status_code == 200, response.text
    return check_schema(response.json(), "BatchCreateResponse")


def test_inline_batch_ends_with_results(http: httpx.Client) -> None:
    requests = [
        _request("q1", "Hi"),
        _request("q2", "broken [[fail:400]]"),
        _request("q3", "long answer please", max_tokens=1),
    ]
    created = _create(http, requests)
    assert created["id"].startswith("msgbatch_01")
    assert created["status"] == "in_progress" and created["processing_status"] == "in_progress"
    assert created["extra_fields"]["provider"] == "anthropic"

    batch = wait_terminal(http, created["id"], "anthropic")
    assert batch["status"] == "ended" and batch["processing_status"] == "ended"
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1, "succeeded": 2}
    assert batch["results_url"].endswith(f"/v1/messages/batches/{created['id']}/results")
    assert "output_file_id" not in batch and batch["completed_at"] >= batch["created_at"]

    response = http.get(f"/v1/batches/{created['id']}/results", params=ANTHROPIC)
    body = check_schema(response.json(), "BatchResultsResponse")
    items = {item["custom_id"]: item for item in body["results"]}
    message = items["q1"]["result"]["message"]
    assert items["q1"]["result"]["type"] == "succeeded" and "error" not in items["q1"]
    assert message["type"] == "message" and message["model"] == "claude-3-5-haiku-latest"
    assert message["content"][0]["type"] == "text" and message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] > 0
    # Bifrost's lossy parse of the nested Anthropic error (BIFROST-NOTES 5.1).
    assert items["q2"] == {
        "custom_id": "q2",
        "result": {"type": "errored"},
        "error": {"code": "error", "message": ""},
    }
    truncated = items["q3"]["result"]["message"]
    assert truncated["stop_reason"] == "max_tokens" and truncated["usage"]["output_tokens"] == 1


def test_results_before_end_are_refused(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=5))
    created = _create(http, [_request(f"r{i}", "x") for i in range(20)])
    response = http.get(f"/v1/batches/{created['id']}/results", params=ANTHROPIC)
    assert response.status_code == 400
    check_schema(response.json(), "BifrostError")


def test_cancel_mid_flight_ends_with_canceled_items(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=40))
    created = _create(http, [_request(f"r{i}", f"q{i}") for i in range(40)])
    wait_progress(http, created["id"])
    response = http.post(f"/v1/batches/{created['id']}/cancel", params=ANTHROPIC)
    cancel = check_schema(response.json(), "BatchCancelResponse")
    assert cancel["object"] == "message_batch" and cancel["status"] == "cancelling"
    assert set(cancel["request_counts"]) == {"total", "completed", "failed"}
    batch = wait_terminal(http, created["id"], "anthropic")
    counts = batch["request_counts"]
    assert batch["status"] == "ended" and batch["cancelling_at"]
    assert 0 < counts["canceled"] < 40 and counts["succeeded"] + counts["canceled"] == 40
    results = http.get(f"/v1/batches/{created['id']}/results", params=ANTHROPIC).json()["results"]
    types = [item["result"]["type"] for item in results]
    assert types.count("canceled") == counts["canceled"] and len(types) == 40


def test_forced_expiry_marks_the_rest_expired(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=40))
    created = _create(http, [_request(f"r{i}", f"q{i}") for i in range(40)])
    wait_progress(http, created["id"])
    assert http.post(f"/_emulator/batches/{created['id']}/expire").status_code == 200
    batch = wait_terminal(http, created["id"], "anthropic")
    counts = batch["request_counts"]
    assert batch["status"] == "ended" and 0 < counts["expired"] < 40
    results = http.get(f"/v1/batches/{created['id']}/results", params=ANTHROPIC).json()["results"]
    assert sum(item["result"]["type"] == "expired" for item in results) == counts["expired"]


def test_file_based_create_is_refused(http: httpx.Client) -> None:
    file_id = upload(http, b'{"custom_id":"a"}\n', provider="anthropic")
    response = http.post("/v1/batches", json={"model": MODEL, "input_file_id": file_id})
    assert response.status_code == 500
    body = check_schema(response.json(), "BifrostError")
    assert body["error"]["message"] == "requests array is required for Anthropic batch API"
    assert body["is_bifrost_error"] is True


def test_custom_id_rules(http: httpx.Client) -> None:
    bad = http.post("/v1/batches", json={"model": MODEL, "requests": [_request("has space", "x")]})
    duplicate = http.post(
        "/v1/batches", json={"model": MODEL, "requests": [_request("a", "x"), _request("a", "y")]}
    )
    for response in (bad, duplicate):
        assert response.status_code == 400
        assert (
            check_schema(response.json(), "BifrostError")["error"]["type"]
            == "invalid_request_error"
        )


def test_fingerprint_counter_and_retrieve_404_quirk(emulator_factory, client_for) -> None:
    emulator: EmbeddedEmulator = emulator_factory(retrieve_404_seconds=0.3)
    http = client_for(emulator)
    requests = [_request("f1", "fingerprint me")]
    created = _create(http, requests)
    early = http.get(f"/v1/batches/{created['id']}", params=ANTHROPIC)
    assert early.status_code == 404
    assert check_schema(early.json(), "BifrostError")["error"]["type"] == "not_found_error"
    time.sleep(0.35)
    assert wait_terminal(http, created["id"], "anthropic")["status"] == "ended"
    counters = http.get("/_emulator/counters").json()
    assert counters["batches_by_fingerprint"] == {fingerprint_requests(requests): 1}
    assert counters["faults_fired"]["retrieve_404"] >= 1


def test_params_model_is_not_filled_in(http: httpx.Client) -> None:
    """Bifrost forwards `params` as sent: without a model, Anthropic errors the request."""
    item = _request("nomodel", "hello")
    del item["params"]["model"]
    created = _create(http, [item, _request("withmodel", "hello")])
    wait_terminal(http, created["id"], "anthropic")
    body = http.get(f"/v1/batches/{created['id']}/results", params=ANTHROPIC).json()
    types = {i["custom_id"]: i["result"]["type"] for i in body["results"]}
    assert types == {"nomodel": "errored", "withmodel": "succeeded"}
