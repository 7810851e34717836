"""Shortcuts for the emulator tests: spec validation, JSONL helpers and batch-flow steps."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import yaml

# A copy of ../shared/spec/bifrost-batch-openapi.yaml, so the tests never depend on ../shared.
SPEC_PATH = Path(__file__).parent / "data" / "bifrost-batch-openapi.yaml"
TERMINAL = {"completed", "failed", "expired", "cancelled", "ended"}


def _load_components() -> dict[str, Any]:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    components = copy.deepcopy(spec["components"])
    schemas = components["schemas"]
    # BIFROST-NOTES section 8.4: Go emits `cancelled` while the published enum says `canceled`.
    schemas["BatchStatus"]["enum"].append("cancelled")
    # BIFROST-NOTES section 2.4: /results may add extra_fields.parse_errors.
    schemas["BifrostResponseExtraFields"]["properties"]["parse_errors"] = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["code", "message", "line"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "line": {"type": "integer"},
            },
        },
    }
    return components


COMPONENTS = _load_components()


def check_schema(body: Any, name: str) -> Any:
    """Validate a JSON body against a spec component schema; unknown top-level keys fail too."""
    schema = {
        "$ref": f"#/components/schemas/{name}",
        "unevaluatedProperties": False,
        "components": COMPONENTS,
    }
    jsonschema.Draft202012Validator(schema).validate(body)
    return body


def jsonl(items: list[dict[str, Any]]) -> bytes:
    """Items as JSONL bytes."""
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def chat_line(
    custom_id: str, content: str, model: str = "gpt-4o-mini", **extra: Any
) -> dict[str, Any]:
    """An OpenAI batch input line for /v1/chat/completions."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def parse_jsonl(raw: bytes | str) -> list[dict[str, Any]]:
    """Parse JSONL text into objects (blank lines skipped)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def upload(client: httpx.Client, content: bytes, provider: str = "openai") -> str:
    """Upload a batch input file; returns its id."""
    response = client.post(
        "/v1/files",
        params={"provider": provider},
        files={"file": ("input.jsonl", content, "application/jsonl")},
        data={"purpose": "batch"},
    )
    assert response.status_code == 200, response.text
    return check_schema(response.json(), "FileUploadResponse")["id"]


def create_openai_batch(
    client: httpx.Client,
    lines: list[dict[str, Any]],
    endpoint: str = "/v1/chat/completions",
    **extra: Any,
) -> dict[str, Any]:
    """Upload `lines` and create an OpenAI batch over them; returns the create body."""
    file_id = upload(client, jsonl(lines))
    body = {"model": "openai/gpt-4o-mini", "input_file_id": file_id, "endpoint": endpoint, **extra}
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 200, response.text
    return check_schema(response.json(), "BatchCreateResponse")


def retrieve(client: httpx.Client, batch_id: str, provider: str = "openai") -> dict[str, Any]:
    """GET a batch and validate the body."""
    response = client.get(f"/v1/batches/{quote(batch_id, safe='')}", params={"provider": provider})
    assert response.status_code == 200, response.text
    return check_schema(response.json(), "BatchRetrieveResponse")


def wait_terminal(
    client: httpx.Client, batch_id: str, provider: str = "openai", timeout: float = 10
) -> dict[str, Any]:
    """Poll until the batch is terminal; returns the final retrieve body."""
    deadline = time.monotonic() + timeout
    while True:
        batch = retrieve(client, batch_id, provider)
        if batch["status"] in TERMINAL:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch['status']}"
        time.sleep(0.02)


def wait_progress(
    client: httpx.Client, batch_id: str, minimum: int = 1, timeout: float = 10
) -> dict[str, Any]:
    """Poll the admin record until at least `minimum` requests were processed."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/_emulator/batches/{quote(batch_id, safe='')}").json()
        if record["processed"] >= minimum:
            return record
        assert time.monotonic() < deadline, f"batch {batch_id} made no progress"
        time.sleep(0.005)


def download(client: httpx.Client, file_id: str, provider: str = "openai") -> list[dict[str, Any]]:
    """Download a file and parse it as JSONL."""
    response = client.get(f"/v1/files/{file_id}/content", params={"provider": provider})
    assert response.status_code == 200, response.text
    return parse_jsonl(response.content)


def path_id(ident: str) -> str:
    """An id percent-encoded for a path segment (`batches/x` -> `batches%2Fx`)."""
    return quote(ident, safe="")


def results(client: httpx.Client, batch_id: str, provider: str) -> httpx.Response:
    """GET /v1/batches/{id}/results for a provider."""
    return client.get(f"/v1/batches/{path_id(batch_id)}/results", params={"provider": provider})
