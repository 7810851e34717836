"""Request bodies in the form Bifrost forwards, unchanged, to Gemini, Vertex and Bedrock.

Bifrost turns an OpenAI-style chat body into a Gemini request by its `messages` alone: the
generation parameters (`max_tokens`, `temperature`, `response_format`, ...) are dropped, and for
Bedrock it converts nothing (each model's own body is expected). So the pipeline writes the
native body into the shard, where the size limits are checked and the content is hashed:

- Gemini, and Gemini models on Vertex: a GenerateContentRequest (`contents`,
  `systemInstruction`, `generationConfig`);
- Bedrock, Anthropic models (`anthropic.*`, `us.anthropic.*`, ...): Anthropic's Messages body
  with Bedrock's `anthropic_version`;
- Bedrock, other models: the Converse shape (`messages`, `system`, `inferenceConfig`).

A body already in its native form is sent as it is. ValueError says, in one line, why a body
cannot be converted (it becomes that line's problem).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
_GEMINI_NATIVE = ("contents",)
_BEDROCK_NATIVE = ("anthropic_version", "inferenceConfig", "inputText", "prompt")
# JSON-schema words Gemini's responseSchema (an OpenAPI subset) does not take
_SCHEMA_DROPPED = frozenset({"additionalProperties", "$schema", "strict", "title", "$defs"})

Converter = Callable[[dict[str, Any]], dict[str, Any]]


def converter(provider: str, model: str) -> Converter | None:
    """The conversion a provider's bodies need (the body's model already bare), or None."""
    if provider in ("gemini", "vertex"):
        return gemini_request
    if provider == "bedrock":
        return bedrock_anthropic if _anthropic_on_bedrock(model) else bedrock_converse
    return None


def gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """A GenerateContentRequest from a chat body (the model stays: Bifrost routes by it)."""
    if any(key in body for key in _GEMINI_NATIVE):
        return body
    system, turns = _split_messages(body)
    request: dict[str, Any] = {"model": body["model"]}
    request["contents"] = [
        {"role": "model" if role == "assistant" else "user", "parts": [{"text": text}]}
        for role, text in turns
    ]
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


def bedrock_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's Messages body as Bedrock's InvokeModel takes it."""
    if any(key in body for key in _BEDROCK_NATIVE):
        return body
    if "messages" in body and "max_tokens" in body and not _has_system_turn(body):
        native = dict(body)  # already an Anthropic Messages body (a /v1/messages line)
    else:
        system, turns = _split_messages(body)
        native = {"model": body["model"], "messages": _text_turns(turns)}
        if system:
            native["system"] = system
        _copy(body, native, {"temperature": "temperature", "top_p": "top_p"})
        limit = body.get("max_tokens", body.get("max_completion_tokens"))
        if limit is None:
            raise ValueError("body.max_tokens: Anthropic models on Bedrock need it")
        native["max_tokens"] = limit
        stop = _stop_sequences(body)
        if stop:
            native["stop_sequences"] = stop
    native["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
    return native


def bedrock_converse(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse body (`messages`, `system`, `inferenceConfig`) for other Bedrock models."""
    if any(key in body for key in _BEDROCK_NATIVE):
        return body
    system, turns = _split_messages(body)
    native: dict[str, Any] = {
        "model": body["model"],
        "messages": [{"role": role, "content": [{"text": text}]} for role, text in turns],
    }
    if system:
        native["system"] = [{"text": system}]
    config: dict[str, Any] = {}
    _copy(body, config, {"max_tokens": "maxTokens", "max_completion_tokens": "maxTokens"})
    _copy(body, config, {"temperature": "temperature", "top_p": "topP"})
    stop = _stop_sequences(body)
    if stop:
        config["stopSequences"] = stop
    if config:
        native["inferenceConfig"] = config
    return native


def _anthropic_on_bedrock(model: str) -> bool:
    """Bedrock model ids of Anthropic models: `anthropic.claude-...`, or an inference profile
    such as `us.anthropic.claude-...`."""
    return model.startswith("anthropic.") or ".anthropic." in model


def _split_messages(body: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The system text and the (role, text) turns of a chat body's `messages` (or `prompt`)."""
    messages = body.get("messages")
    if messages is None and isinstance(body.get("prompt"), str):
        messages = [{"role": "user", "content": body["prompt"]}]
    if not isinstance(messages, list) or not messages:
        raise ValueError("body.messages: a non-empty list of messages is needed")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"body.messages[{n}]: not an object")
        role, text = message.get("role"), _text(message.get("content"), n)
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append((role, text))
        else:
            raise ValueError(f"body.messages[{n}].role: {role!r} has no counterpart here")
    if not turns:
        raise ValueError("body.messages: no user message")
    return "\n\n".join(system), turns


def _has_system_turn(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages
    )


def _text(content: object, n: int) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"body.messages[{n}].content: a {kind!r} part is not supported")
        return "".join(texts)
    raise ValueError(f"body.messages[{n}].content: must be a string or a list of text parts")


def _text_turns(turns: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"role": role, "content": text} for role, text in turns]


def _stop_sequences(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else []


def _copy(source: dict[str, Any], target: dict[str, Any], names: dict[str, str]) -> None:
    for old, new in names.items():
        if source.get(old) is not None:
            target[new] = source[old]


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    """Gemini's generationConfig from OpenAI's parameters."""
    config: dict[str, Any] = {}
    _copy(
        body, config, {"max_tokens": "maxOutputTokens", "max_completion_tokens": "maxOutputTokens"}
    )
    _copy(body, config, {"temperature": "temperature", "top_p": "topP", "n": "candidateCount"})
    _copy(body, config, {"seed": "seed", "presence_penalty": "presencePenalty"})
    _copy(body, config, {"frequency_penalty": "frequencyPenalty"})
    stop = _stop_sequences(body)
    if stop:
        config["stopSequences"] = stop
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseSchema"] = _gemini_schema(schema)
    return config


def _gemini_schema(schema: Any) -> Any:
    """A JSON schema without the words Gemini's responseSchema refuses (property names are
    names, not words: a property called `title` stays)."""
    if isinstance(schema, list):
        return [_gemini_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for word, value in schema.items():
        if word in _SCHEMA_DROPPED:
            continue
        if word == "properties" and isinstance(value, dict):
            kept[word] = {name: _gemini_schema(sub) for name, sub in value.items()}
        else:
            kept[word] = _gemini_schema(value)
    return kept


def gemini_input_file(shard: Path, dest: Path) -> None:
    """A shard as Gemini's own batch input file: one `{"key", "request"}` line per request
    (Bifrost uploads a file to Gemini unchanged, and reads the key back as the custom_id)."""
    with open(shard, "rb") as lines, open(dest, "wb") as out:
        for raw in lines:
            if raw.strip():
                line = orjson.loads(raw)
                request = {k: v for k, v in line["body"].items() if k != "model"}
                out.write(orjson.dumps({"key": line["custom_id"], "request": request}) + b"\n")
