"""The fake model's provider-native bodies: Google's `GenerateContentResponse` (Gemini and Vertex
batches) and Bedrock's record outputs (Anthropic Messages with `anthropic_version`, or Converse).

Same rules as `fake_model`: the text depends only on (model, prompt), `[[fail:NNN]]` and the
seeded `error_rate` fail a request, `[[answer:...]]` and `bad_answer_rate` spoil structured output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from batch_pipeline.emulator import fake_model
from batch_pipeline.emulator.fake_model import (
    RequestFailure,
    count_tokens,
    injected_failure,
    reply_text,
    structured_answer,
)

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"


@dataclass(frozen=True)
class Draws:
    """The seeded knobs every answer reads."""

    error_rate: float = 0.0
    bad_answer_rate: float = 0.0
    seed: int = 0


def _part_texts(parts: Any) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [part["text"] for part in parts if isinstance(part, dict) and "text" in part]


def google_prompt(body: dict[str, Any]) -> str:
    """The prompt of a GenerateContentRequest: system instruction then every content's text."""
    texts: list[str] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        texts.extend(_part_texts(system.get("parts")))
    for content in body.get("contents") or ():
        if isinstance(content, dict):
            texts.extend(_part_texts(content.get("parts")))
    return "\n".join(texts)


def _lower_types(schema: Any) -> Any:
    """Google's schema spells types in capitals (`OBJECT`); JSON Schema wants lower case."""
    if isinstance(schema, dict):
        return {
            key: (
                value.lower() if key == "type" and isinstance(value, str) else _lower_types(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(item) for item in schema]
    return schema


def generate_content(
    body: Any, *, model: str, seed_key: str, draws: Draws = Draws()
) -> dict[str, Any]:
    """A Gemini `GenerateContentResponse` for one request; raises RequestFailure as Google does."""
    if not isinstance(body, dict):
        raise RequestFailure(400, "Invalid JSON payload received.", type="INVALID_ARGUMENT")
    if not body.get("contents"):
        raise RequestFailure(
            400,
            "* GenerateContentRequest.contents: contents is not specified",
            type="INVALID_ARGUMENT",
        )
    injected_failure(body, seed_key=seed_key, error_rate=draws.error_rate, seed=draws.seed)
    config = body.get("generationConfig") or body.get("generation_config") or {}
    limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
    max_tokens = limit if isinstance(limit, int) and limit > 0 else None
    prompt = google_prompt(body)
    text, tokens, truncated = reply_text(model, prompt, max_tokens)
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    if config.get("responseMimeType") == "application/json" and isinstance(schema, dict):
        bad, answer = structured_answer(
            body,
            _lower_types(schema),
            model=model,
            seed_key=seed_key,
            bad_rate=draws.bad_answer_rate,
            seed=draws.seed,
        )
        text = fake_model.REFUSAL if bad == "refusal" else orjson.dumps(answer).decode()
        if bad == "invalid":
            text = "Sure! Here is the answer: " + text[:-1]
        tokens, truncated = count_tokens(text), False
    prompt_tokens = count_tokens(prompt)
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "MAX_TOKENS" if truncated else "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": tokens,
            "totalTokenCount": prompt_tokens + tokens,
        },
        "modelVersion": model,
    }


def _converse_shaped(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    return isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages
    )


def bedrock_output(
    body: Any, *, model_id: str, seed_key: str, draws: Draws = Draws()
) -> dict[str, Any]:
    """A Bedrock batch record's `modelOutput`: the InvokeModel body of Anthropic Messages when the
    input carries `anthropic_version`, a Converse answer for a Converse-shaped input; anything
    else is the 400 ValidationException Bedrock writes into the record's error."""
    if not isinstance(body, dict):
        raise RequestFailure(400, "Malformed input request: expected a JSON object")
    if "anthropic_version" in body:
        if body["anthropic_version"] != BEDROCK_ANTHROPIC_VERSION:
            raise RequestFailure(
                400,
                f"Malformed input request: anthropic_version must be {BEDROCK_ANTHROPIC_VERSION}",
            )
        if "model" in body or "modelId" in body:
            extra = "model" if "model" in body else "modelId"
            raise RequestFailure(
                400, f"Malformed input request: extraneous key [{extra}] is not permitted"
            )
        native = {key: value for key, value in body.items() if key != "anthropic_version"}
        return fake_model.respond(
            "/v1/messages",
            {**native, "model": model_id},
            seed_key=seed_key,
            created=0,
            error_rate=draws.error_rate,
            bad_answer_rate=draws.bad_answer_rate,
            seed=draws.seed,
        )
    if not _converse_shaped(body):
        raise RequestFailure(
            400,
            "Malformed input request: #: required key [anthropic_version] not found"
            if model_id.startswith(("anthropic.", "us.anthropic.", "eu.anthropic."))
            else "Malformed input request: messages must be a list of content-block messages",
        )
    injected_failure(body, seed_key=seed_key, error_rate=draws.error_rate, seed=draws.seed)
    texts = [
        text
        for message in body["messages"] + [{"content": body.get("system") or []}]
        for text in _part_texts(message["content"])
    ]
    prompt = "\n".join(texts)
    config = body.get("inferenceConfig") or {}
    limit = config.get("maxTokens") if isinstance(config, dict) else None
    text, tokens, truncated = reply_text(
        model_id, prompt, limit if isinstance(limit, int) else None
    )
    prompt_tokens = count_tokens(prompt)
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "max_tokens" if truncated else "end_turn",
        "usage": {
            "inputTokens": prompt_tokens,
            "outputTokens": tokens,
            "totalTokens": prompt_tokens + tokens,
        },
    }
