"""Bad requests get Bifrost's status codes and messages in the BifrostError shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emulator_helpers import chat_line, check_schema, create_openai_batch, jsonl, upload

from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig

MISSING_PROVIDER = "provider query parameter is required"
HANDLER_MESSAGES = {
    "provider query parameter or x-model-provider header is required when model is not specified",
    "either input_file_id, input_blob, or requests is required",
    "not both",
}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One emulator for this module: these checks do not depend on each other's state."""
    config = EmulatorConfig.fast(state_dir=tmp_path_factory.mktemp("errors"))
    with EmbeddedEmulator(config) as emulator, httpx.Client(base_url=emulator.base_url) as client:
        yield client


def _post_batch(http: httpx.Client, body: Any, **kwargs: Any) -> httpx.Response:
    return http.post("/v1/batches", json=body, **kwargs)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"input_file_id": "file-x"},
            400,
            "provider query parameter or x-model-provider header is required when model is not specified",
        ),
        (
            {"model": "openai/gpt-4o-mini"},
            400,
            "either input_file_id, input_blob, or requests is required",
        ),
        (
            {"model": "openai/gpt-4o-mini", "input_file_id": "f", "requests": [{"custom_id": "a"}]},
            400,
            "not both",
        ),
        (
            {
                "model": "openai/gpt-4o-mini",
                "input_file_id": "file-nope",
                "endpoint": "/v1/chat/completions",
            },
            404,
            "No such File object: file-nope",
        ),
        (
            {"model": "openai/gpt-4o-mini", "input_file_id": "file-nope"},
            500,
            "endpoint is required for OpenAI batch API",
        ),
        (
            {"model": "openrouter/x", "input_file_id": "file-nope"},
            400,
            "provider not found for batch create request",
        ),
        (
            {"model": "openai/gpt-4o-mini", "input_file_id": "f", "endpoint": "/v1/nope"},
            400,
            "Invalid value for 'endpoint'",
        ),
        (
            {
                "model": "openai/gpt-4o-mini",
                "input_file_id": "f",
                "endpoint": "/v1/embeddings",
                "completion_window": "48h",
            },
            400,
            "Supported values are: '24h'",
        ),
    ],
)
def test_batch_create_errors(http: httpx.Client, body: dict, status: int, message: str) -> None:
    response = _post_batch(http, body)
    assert response.status_code == status
    error = check_schema(response.json(), "BifrostError")
    assert message in error["error"]["message"]
    # the handler's own 400s carry empty extra_fields; provider errors name the request
    if message in HANDLER_MESSAGES:
        assert error["extra_fields"] == {}
    else:
        assert error["extra_fields"]["request_type"] == "batch_create"


def test_malformed_json_body(http: httpx.Client) -> None:
    response = http.post(
        "/v1/batches", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    body = check_schema(response.json(), "BifrostError")
    assert body == {
        "is_bifrost_error": False,
        "status_code": 400,
        "error": {"message": "Invalid request payload"},
        "extra_fields": {},
    }


def test_create_provider_precedence(http: httpx.Client) -> None:
    """Model prefix wins over ?provider=, which wins over the x-model-provider header."""
    file_id = upload(http, jsonl([chat_line("a", "b")]))
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    by_query = _post_batch(
        http, body, params={"provider": "openai"}, headers={"x-model-provider": "anthropic"}
    )
    assert by_query.json()["extra_fields"]["provider"] == "openai"
    by_header = _post_batch(http, body, headers={"x-model-provider": "openai"})
    assert by_header.json()["extra_fields"]["provider"] == "openai"
    by_model = _post_batch(
        http, {**body, "model": "openai/gpt-4o-mini"}, params={"provider": "anthropic"}
    )
    assert by_model.json()["extra_fields"]["provider"] == "openai"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/batches"),
        ("GET", "/v1/batches/batch_x"),
        ("POST", "/v1/batches/batch_x/cancel"),
        ("GET", "/v1/batches/batch_x/results"),
        ("GET", "/v1/files/file-x"),
        ("DELETE", "/v1/files/file-x"),
        ("GET", "/v1/files/file-x/content"),
    ],
)
def test_provider_is_required(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    assert response.status_code == 400
    assert check_schema(response.json(), "BifrostError")["error"]["message"] == MISSING_PROVIDER


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v1/batches/batch_missing", "No such batch: batch_missing"),
        ("POST", "/v1/batches/batch_missing/cancel", "No such batch: batch_missing"),
        ("GET", "/v1/batches/batch_missing/results", "No such batch: batch_missing"),
        ("GET", "/v1/files/file-missing", "No such File object: file-missing"),
        ("GET", "/v1/files/file-missing/content", "No such File object: file-missing"),
        ("DELETE", "/v1/files/file-missing", "No such File object: file-missing"),
    ],
)
def test_unknown_ids_are_404(http: httpx.Client, method: str, path: str, message: str) -> None:
    response = http.request(method, path, params={"provider": "openai"})
    assert response.status_code == 404
    body = check_schema(response.json(), "BifrostError")
    assert body["error"]["message"] == message and body["extra_fields"]["provider"] == "openai"


def test_ids_are_percent_decoded_and_scoped_by_provider(http: httpx.Client) -> None:
    created = create_openai_batch(http, [chat_line("a", "b")])
    encoded = created["id"].replace("_", "%5F")
    decoded = http.get(f"/v1/batches/{encoded}", params={"provider": "openai"})
    assert decoded.json()["id"] == created["id"]
    assert (
        http.get(f"/v1/batches/{created['id']}", params={"provider": "anthropic"}).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("params", "headers", "data", "files", "message"),
    [
        (
            {},
            {},
            {"purpose": "batch"},
            {"file": ("a.jsonl", b"x")},
            "provider query parameter or x-model-provider header is required",
        ),
        ({"provider": "openai"}, {}, {}, {"file": ("a.jsonl", b"x")}, "purpose is required"),
        (
            {"provider": "openai"},
            {},
            {"purpose": "batch"},
            {"other": ("a.jsonl", b"x")},
            "file is required",
        ),
        (
            {"provider": "openai"},
            {},
            {"purpose": "batch"},
            {"file": ("a.jsonl", b"")},
            "file content is required for file upload request",
        ),
        (
            {"provider": "openai"},
            {},
            {"purpose": "nonsense"},
            {"file": ("a.jsonl", b"x")},
            "Invalid value for 'purpose'",
        ),
    ],
)
def test_upload_errors(http: httpx.Client, params, headers, data, files, message: str) -> None:
    response = http.post("/v1/files", params=params, headers=headers, data=data, files=files)
    assert response.status_code == 400
    assert message in check_schema(response.json(), "BifrostError")["error"]["message"]


@pytest.mark.parametrize("where", ["header", "form"])
def test_upload_provider_from_header_or_form(http: httpx.Client, where: str) -> None:
    headers = {"x-model-provider": "openai"} if where == "header" else {}
    data = {"purpose": "batch"} | ({"provider": "openai"} if where == "form" else {})
    response = http.post(
        "/v1/files", headers=headers, data=data, files={"file": ("a.jsonl", b"{}\n")}
    )
    assert (
        check_schema(response.json(), "FileUploadResponse")["extra_fields"]["provider"] == "openai"
    )


@pytest.mark.parametrize("cursor", ["bogus", "batch_abc123"])
def test_undecodable_list_cursor_is_500(http: httpx.Client, cursor: str) -> None:
    """Bifrost's serial cursor helper refuses anything that is not its own cursor."""
    response = http.get("/v1/batches", params={"provider": "openai", "after": cursor})
    assert response.status_code == 500
    body = check_schema(response.json(), "BifrostError")
    assert body["is_bifrost_error"] is True and "status_code" not in body
    assert body["error"]["message"] == "invalid pagination cursor"


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert http.get("/v1/nothing").status_code == 404
    assert http.put("/v1/batches").status_code == 405


def test_broken_multipart_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/files",
        params={"provider": "openai"},
        content=b"garbage",
        headers={"content-type": "multipart/form-data"},
    )
    assert response.status_code == 400
    assert (
        "Failed to parse multipart form"
        in check_schema(response.json(), "BifrostError")["error"]["message"]
    )
