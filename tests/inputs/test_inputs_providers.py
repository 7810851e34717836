"""Inputs for Gemini, Vertex and Bedrock: bodies written in each model's native form (Bifrost
forwards them unchanged), the endpoints each provider serves, and Bedrock's minimum records per
job met by the shard plan or refused line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.inputs import InputOptions, InputRejected, ShardLimits, prepare_input
from batch_pipeline.inputs.native import gemini_input_file, gemini_request
from batch_pipeline.inputs.prepare import validate_file

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["title"],
    "additionalProperties": False,
}


def jsonl(*items: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def line(custom_id: str, model: str, **body: Any) -> dict[str, Any]:
    messages = body.pop("messages", [{"role": "user", "content": f"hello {custom_id}"}])
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": body.pop("url", "/v1/chat/completions"),
        "body": {"model": model, "messages": messages, **body},
    }


def shard_bodies(plan) -> list[dict[str, Any]]:
    return [
        json.loads(raw)["body"]
        for s in plan.shards
        for raw in Path(s.path).read_bytes().splitlines()
    ]


def prepare(tmp_path: Path, lines: list[dict[str, Any]], **options: Any):
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(*lines))
    return prepare_input(path, tmp_path / "staging", InputOptions(**options))


@pytest.mark.parametrize("provider", ["gemini", "vertex"])
def test_gemini_bodies_carry_the_generation_parameters(tmp_path: Path, provider: str) -> None:
    chat = line(
        "a",
        f"{provider}/gemini-2.5-flash",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
            {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "Another."},
        ],
        max_tokens=20,
        temperature=0.2,
        stop="END",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
    )
    (body,) = shard_bodies(prepare(tmp_path, [chat]))
    assert body == {
        "model": "gemini-2.5-flash",
        "contents": [
            {"role": "user", "parts": [{"text": "Name a colour."}]},
            {"role": "model", "parts": [{"text": "Red."}]},
            {"role": "user", "parts": [{"text": "Another."}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "maxOutputTokens": 20,
            "temperature": 0.2,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            # a property named `title` stays; the word additionalProperties goes
            "responseSchema": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["title"],
            },
        },
    }


def test_native_bodies_pass_unchanged(tmp_path: Path) -> None:
    native = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gemini/gemini-2.5-flash",
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 5},
        },
    }
    claude = line("b", "bedrock/anthropic.claude-3-haiku", anthropic_version="x", max_tokens=9)
    plan = prepare(tmp_path, [native, claude], limits=_no_minimum())
    bodies = shard_bodies(plan)
    assert bodies[0]["generationConfig"] == {"maxOutputTokens": 5} and "messages" not in bodies[0]
    assert bodies[1]["anthropic_version"] == "x"


def test_bedrock_bodies_in_each_models_own_form(tmp_path: Path) -> None:
    claude = line(
        "a",
        "bedrock/us.anthropic.claude-3-5-haiku-20241022-v1:0",
        messages=[{"role": "system", "content": "Terse."}, {"role": "user", "content": "Hi"}],
        max_tokens=30,
        temperature=0,
        stop=["\n\n"],
    )
    llama = line("b", "bedrock/meta.llama3-1-8b-instruct-v1:0", max_completion_tokens=40)
    plan = prepare(tmp_path, [claude, llama], limits=_no_minimum())
    first, second = shard_bodies(plan)
    assert first == {
        "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "Terse.",
        "temperature": 0,
        "max_tokens": 30,
        "stop_sequences": ["\n\n"],
        "anthropic_version": "bedrock-2023-05-31",
    }
    assert second == {
        "model": "meta.llama3-1-8b-instruct-v1:0",
        "messages": [{"role": "user", "content": [{"text": "hello b"}]}],
        "inferenceConfig": {"maxTokens": 40},
    }


def test_an_anthropic_style_line_for_claude_on_bedrock(tmp_path: Path) -> None:
    item = {
        "custom_id": "a",
        "params": {
            "model": "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
            "max_tokens": 10,
            "system": "Terse.",
            "messages": [{"role": "user", "content": "Hi"}],
        },
    }
    plan = prepare(tmp_path, [item], limits=_no_minimum())
    (shard,) = plan.shards
    assert shard.endpoint == "/v1/messages"
    (raw,) = Path(shard.path).read_bytes().split(b"\n")[:1]
    sent = json.loads(raw)
    assert sent["url"] == "/v1/messages" and sent["body"]["system"] == "Terse."
    assert sent["body"]["anthropic_version"] == "bedrock-2023-05-31"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            line("a", "bedrock/anthropic.claude-3-haiku"),
            "body.max_tokens: Anthropic models on Bedrock need it",
        ),
        (
            line("a", "gemini/gemini-2.5-flash", messages=[{"role": "tool", "content": "x"}]),
            "body.messages[0].role: 'tool' has no counterpart here",
        ),
        (
            line(
                "a",
                "vertex/gemini-2.5-flash",
                messages=[{"role": "user", "content": [{"type": "image_url"}]}],
            ),
            "body.messages[0].content: a 'image_url' part is not supported",
        ),
        (
            line("a", "gemini/text-embedding-004", url="/v1/embeddings"),
            "url: gemini batches serve /v1/chat/completions, not /v1/embeddings",
        ),
    ],
)
def test_a_body_that_cannot_be_converted_is_a_problem_of_its_line(
    tmp_path: Path, bad: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(bad))
    report = validate_file(path, InputOptions(limits=_no_minimum()))
    assert [str(p) for p in report.problems] == [f"{path}:1: {reason}"]


def _no_minimum() -> dict[str, ShardLimits]:
    """Bedrock's limits with a minimum of one request a batch (its quota is configurable)."""
    return {
        "bedrock": ShardLimits(
            max_requests=50_000, max_bytes=10**8, max_bytes_per_request=10**6, min_requests=1
        )
    }


def _bedrock(n: int) -> list[dict[str, Any]]:
    return [line(f"r{i}", "bedrock/meta.llama3-1-8b-instruct-v1:0") for i in range(n)]


def test_bedrock_shards_are_never_below_its_minimum(tmp_path: Path) -> None:
    limits = {
        "bedrock": ShardLimits(
            max_requests=200, max_bytes=10**8, max_bytes_per_request=10**6, min_requests=100
        )
    }
    plan = prepare(tmp_path, _bedrock(250), limits=limits)
    assert [s.request_count for s in plan.shards] == [150, 100]  # not 200 and 50
    ids = [
        json.loads(raw)["custom_id"]
        for s in plan.shards
        for raw in Path(s.path).read_bytes().splitlines()
    ]
    assert ids == [f"r{i}" for i in range(250)]  # every request once, in input order
    assert plan.rejected_count == 0


def test_a_bedrock_group_below_the_minimum_is_refused_line_by_line(tmp_path: Path) -> None:
    lines = [*_bedrock(37), line("o", "openai/gpt-4o-mini")]
    plan = prepare(tmp_path, lines, on_invalid="skip")
    assert [(s.provider, s.request_count) for s in plan.shards] == [("openai", 1)]
    assert plan.rejected_count == 37
    rejected = [json.loads(r) for r in Path(plan.rejected_path).read_bytes().splitlines()]
    assert rejected[0]["reason"] == (
        "bedrock/meta.llama3-1-8b-instruct-v1:0 has 37 request(s) in this file; a bedrock "
        "batch takes at least 100, so none of them can be sent"
    )
    (tmp_path / "again").mkdir()
    with pytest.raises(InputRejected, match="takes at least 100"):
        prepare(tmp_path / "again", lines)


def test_gemini_input_file_lines(tmp_path: Path) -> None:
    shard = tmp_path / "shard.jsonl"
    body = gemini_request(
        {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    )
    shard.write_bytes(
        jsonl({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body})
    )
    gemini_input_file(shard, tmp_path / "out.jsonl")
    assert json.loads((tmp_path / "out.jsonl").read_bytes()) == {
        "key": "a",
        "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    }
