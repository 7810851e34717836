"""The Bedrock provider on /v1: required extra params, ARN ids, records in the simulated S3,
statuses as Bifrost maps them, results from every object under the output prefix, S3 files."""

from __future__ import annotations

import httpx
import pytest
from emulator_helpers import check_schema, jsonl, path_id, results, wait_progress, wait_terminal

BEDROCK = {"provider": "bedrock"}
CLAUDE = "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0"


def _claude(custom_id: str, text: str, **extra: object) -> dict:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    return {"custom_id": custom_id, "body": body}


def _create(http: httpx.Client, **body: object) -> httpx.Response:
    defaults = {
        "model": CLAUDE,
        "role_arn": "arn:aws:iam::123456789012:role/batch",
        "output_s3_uri": "s3://bucket/out/",
    }
    return http.post("/v1/batches", json={**defaults, **body})


def _created(http: httpx.Client, **body: object) -> dict:
    response = _create(http, **body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def bedrock(emulator_factory, client_for) -> httpx.Client:
    return client_for(emulator_factory(bedrock_min_records=3))


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("role_arn", "role_arn is required for Bedrock batch API (provide in extra_params)"),
        (
            "output_s3_uri",
            "output_s3_uri is required for Bedrock batch API (provide in extra_params)",
        ),
    ],
)
def test_required_extra_params(bedrock: httpx.Client, missing: str, message: str) -> None:
    response = _create(bedrock, requests=[_claude("a", "x")], **{missing: ""})
    assert response.status_code == 500
    assert check_schema(response.json(), "BifrostError")["error"]["message"] == message


def test_inline_job_runs_and_partial_failure_reads_failed(bedrock: httpx.Client) -> None:
    response = _create(
        bedrock,
        requests=[
            _claude("r1", "Hello"),
            _claude("r2", "broken [[fail:400]]"),
            {
                "custom_id": "r3",
                "body": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            },
            {
                "custom_id": "r4",
                "body": {"model": "x", "messages": [{"role": "user", "content": "x"}]},
            },
        ],
        metadata={"job_name": "nightly-1"},
    )
    created = check_schema(response.json(), "BatchCreateResponse")
    assert created["id"].startswith("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/")
    assert created["status"] == "validating"
    assert created["input_file_id"].startswith("s3://bucket/bifrost-batch-input/nightly-1-")
    assert created["expires_at"] == created["created_at"] + 24 * 3600

    batch = wait_terminal(bedrock, created["id"], "bedrock")
    assert batch["status"] == "failed"  # PartiallyCompleted
    assert batch["output_file_id"] == "s3://bucket/out/"
    assert batch["metadata"] == {
        "job_name": "nightly-1",
        "model_id": CLAUDE.removeprefix("bedrock/"),
    }
    # Bifrost looks for the manifest one level above where Bedrock writes it.
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}

    items = {
        i["custom_id"]: i for i in results(bedrock, created["id"], "bedrock").json()["results"]
    }
    message = items["r1"]["response"]["body"]
    assert items["r1"]["response"]["status_code"] == 200 and message["type"] == "message"
    assert items["r2"]["response"] == {"status_code": 400}
    assert items["r2"]["error"]["code"] == "400"
    converse = items["r3"]["response"]["body"]
    assert (
        converse["output"]["message"]["content"][0]["text"] and converse["stopReason"] == "end_turn"
    )
    # `model` is dropped from modelInput; a plain OpenAI body is malformed for Claude.
    assert "anthropic_version" in items["r4"]["error"]["message"]

    listing = bedrock.get(
        "/v1/files", params={**BEDROCK, "s3_bucket": "bucket", "s3_prefix": "out"}
    ).json()
    job = created["id"].rsplit("/", 1)[-1]
    names = sorted(f["id"].removeprefix(f"s3://bucket/out/{job}/") for f in listing["data"])
    assert names[0] == "manifest.json.out" and names[1].endswith(".jsonl.out")


def test_too_few_records_fail_the_job(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory())
    created = _create(http, requests=[_claude(f"r{i}", "x") for i in range(99)]).json()
    batch = wait_terminal(http, created["id"], "bedrock")
    assert batch["status"] == "failed"
    assert "below the minimum of 100" in batch["errors"]["data"][0]["message"]


def test_job_names_must_be_unique(bedrock: httpx.Client) -> None:
    first = _create(bedrock, requests=[_claude("a", "x")], metadata={"job_name": "same"})
    assert first.status_code == 200
    again = _create(bedrock, requests=[_claude("a", "x")], metadata={"job_name": "same"})
    assert again.status_code == 400 and "already exists" in again.json()["error"]["message"]


def test_file_input_stop_and_shared_prefix(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(bedrock_min_records=3, requests_per_second=20))
    records = [
        {"recordId": f"r{i}", "modelInput": _claude(f"r{i}", f"q{i}")["body"]} for i in range(40)
    ]
    missing_bucket = http.post(
        "/v1/files",
        params=BEDROCK,
        files={"file": ("in.jsonl", jsonl(records))},
        data={"purpose": "batch"},
    )
    assert missing_bucket.status_code == 500 and "s3_bucket is required" in missing_bucket.text
    response = http.post(
        "/v1/files",
        params=BEDROCK,
        files={"file": ("in.jsonl", jsonl(records))},
        data={"purpose": "batch", "s3_bucket": "bucket", "s3_prefix": "inputs"},
    )
    assert response.status_code == 200, response.text
    uploaded = response.json()
    assert uploaded["id"] == "s3://bucket/inputs/in.jsonl" and uploaded["storage_backend"] == "s3"
    content = http.get(f"/v1/files/{path_id(uploaded['id'])}/content", params=BEDROCK)
    assert content.content == jsonl(records)

    created = _created(
        http,
        input_file_id=uploaded["id"],
        output_s3_uri="s3://bucket/shared/",
        metadata={"job_name": "first"},
    )
    wait_progress(http, created["id"])
    stop = http.post(f"/v1/batches/{path_id(created['id'])}/cancel", params=BEDROCK).json()
    assert stop["status"] == "cancelling"
    batch = wait_terminal(http, created["id"], "bedrock")
    assert batch["status"] == "cancelled"
    first = results(http, created["id"], "bedrock").json()["results"]
    assert 0 < len(first) < 40

    # a second job writing under the same prefix: Bifrost's results mix both jobs
    second = _created(
        http,
        requests=[_claude(f"s{i}", "x") for i in range(3)],
        output_s3_uri="s3://bucket/shared/",
        metadata={"job_name": "second"},
    )
    wait_terminal(http, second["id"], "bedrock")
    mixed = results(http, second["id"], "bedrock").json()["results"]
    assert len(mixed) == len(first) + 3
