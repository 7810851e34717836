"""The wire models read every documented example losslessly and tolerate what gateways vary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from batch_pipeline import gateway
from batch_pipeline.gateway import (
    BatchCancelResponse,
    BatchEndpoint,
    BatchRetrieveResponse,
    BatchStatus,
    BifrostError,
    ErrorField,
    FileObject,
    FilePurpose,
    ModelProvider,
)

EXAMPLES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "bifrost_notes_examples.jsonl")
    .read_text()
    .splitlines()
]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["source"] for e in EXAMPLES])
def test_every_notes_example_round_trips(example: dict) -> None:
    model = getattr(gateway, example["model"])
    raw = json.dumps(example["json"])
    parsed = model.model_validate_json(raw)
    assert parsed.model_dump(mode="json", exclude_unset=True) == example["json"]
    assert json.loads(parsed.model_dump_json(exclude_unset=True)) == example["json"]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("cancelled", BatchStatus.CANCELLED),
        ("canceled", BatchStatus.CANCELLED),
        ("CANCELED", BatchStatus.CANCELLED),
        ("canceling", BatchStatus.CANCELLING),
        ("cancelling", BatchStatus.CANCELLING),
        ("ended", BatchStatus.ENDED),
        ("in_progress", BatchStatus.IN_PROGRESS),
    ],
)
def test_status_accepts_both_spellings(wire: str, expected: BatchStatus) -> None:
    batch = BatchRetrieveResponse.model_validate({"id": "b", "status": wire})
    assert batch.status is expected


def test_unknown_status_is_kept_as_text() -> None:
    batch = BatchRetrieveResponse.model_validate({"id": "b", "status": "paused_for_review"})
    assert batch.status == "paused_for_review"
    assert not isinstance(batch.status, BatchStatus)
    assert batch.model_dump()["status"] == "paused_for_review"


def test_missing_status_is_none() -> None:
    assert BatchCancelResponse.model_validate({"id": "b"}).status is None


def test_unknown_fields_are_kept_at_every_level() -> None:
    batch = BatchRetrieveResponse.model_validate(
        {
            "id": "b",
            "status": "completed",
            "shiny_new_field": {"a": 1},
            "request_counts": {"total": 1, "completed": 1, "failed": 0, "retried": 4},
            "extra_fields": {"request_type": "batch_retrieve", "trace_id": "t-1"},
        }
    )
    dumped = batch.model_dump(mode="json", exclude_unset=True)
    assert dumped["shiny_new_field"] == {"a": 1}
    assert dumped["request_counts"]["retried"] == 4
    assert dumped["extra_fields"]["trace_id"] == "t-1"


@pytest.mark.parametrize(
    ("model", "field", "known", "member", "unknown"),
    [
        (BatchRetrieveResponse, "endpoint", "/v1/embeddings", BatchEndpoint.EMBEDDINGS, "/v1/x"),
        (FileObject, "purpose", "batch_output", FilePurpose.BATCH_OUTPUT, "new-purpose"),
    ],
)
def test_open_enums_parse_known_and_keep_unknown(
    model: type, field: str, known: str, member: object, unknown: str
) -> None:
    assert getattr(model.model_validate({"id": "x", field: known}), field) is member
    assert getattr(model.model_validate({"id": "x", field: unknown}), field) == unknown


def test_provider_enum_matches_spec_and_keeps_unknown_providers() -> None:
    extra = gateway.BifrostResponseExtraFields.model_validate({"provider": "anthropic"})
    assert extra.provider is ModelProvider.ANTHROPIC
    assert (
        gateway.BifrostResponseExtraFields.model_validate({"provider": "acme"}).provider == "acme"
    )


@pytest.mark.parametrize(
    ("code", "expected"), [(429, "429"), ("rate_limit", "rate_limit"), (None, None)]
)
def test_error_code_may_be_a_number(code: object, expected: str | None) -> None:
    assert ErrorField.model_validate({"message": "m", "code": code}).code == expected


def test_error_member_given_as_plain_text() -> None:
    error = BifrostError.model_validate({"error": "upstream exploded"})
    assert error.error is not None
    assert error.error.message == "upstream exploded"


def test_batch_id_is_required() -> None:
    with pytest.raises(ValidationError):
        BatchRetrieveResponse.model_validate({"status": "completed"})


def test_counts_distinguish_absent_from_zero() -> None:
    counts = gateway.BatchRequestCounts.model_validate({"total": 3, "completed": 3, "failed": 0})
    assert counts.succeeded is None
    assert counts.canceled is None
