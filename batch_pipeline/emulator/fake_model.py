"""A deterministic fake model answering the five batch endpoints with bodies shaped like the real APIs.

The reply text is a function of (model, prompt) only, so a test can predict it by calling again.
A request fails on purpose when its body contains the marker `[[fail:NNN]]` (HTTP status NNN,
e.g. `[[fail:400]]`, `[[fail:429]]`, `[[fail:500]]`), when a seeded `error_rate` draw hits it
(HTTP 500), or when a parameter is invalid the way the real API rejects it (HTTP 400).

A request that asks for structured output (chat `response_format` json_schema, Responses
`text.format` json_schema, a Messages tool forced by `tool_choice`) gets a deterministic answer
valid under the schema. `[[answer:invalid]]` (text that is not JSON), `[[answer:schema]]` (JSON
the schema refuses) and `[[answer:refusal]]` in the request, or a seeded `bad_answer_rate`
draw (invalid JSON or a refusal), give the bad answers a pipeline must catch.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
from typing import Any

import orjson

from batch_pipeline.emulator.errors import GOOGLE_STATUS

FAIL_MARKER = re.compile(r"\[\[fail:(\d{3})\]\]")
ANSWER_MARKER = re.compile(r"\[\[answer:(invalid|schema|refusal)\]\]")
REFUSAL = "I'm sorry, but I can't help with that request."
TOKEN = re.compile(r"\w+|[^\w\s]")

_WORDS = (
    "the a model batch answer data token river stone light signal quiet bright careful "
    "simple green result value window paper cloud number blue yes no maybe fast slow open "
    "closed north south system request reply review summary clear short long good fine "
    "useful stable final early late small large warm cold first second third new old "
    "ready done plain honest neutral positive negative mixed"
)
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())

# HTTP status -> (OpenAI error type, OpenAI error code) for injected failures.
OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class RequestFailure(Exception):
    """One request failed as the provider would report it: HTTP status plus error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        default_type, default_code = openai_error_kind(status)
        self.type = type or default_type
        self.code = code if code is not None or type is not None else default_code
        self.param = param

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error body: `{"error": {message, type, param, code}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def google_error(self) -> dict[str, Any]:
        """Google's error status: `{code, message, status}` (Gemini and Vertex)."""
        fallback = "INTERNAL" if self.status >= 500 else "INVALID_ARGUMENT"
        status = GOOGLE_STATUS.get(self.status, fallback)
        return {"code": self.status, "message": self.message, "status": status}

    def anthropic_error(self) -> dict[str, Any]:
        """Anthropic's error body: `{"type": "error", "error": {type, message}}`."""
        kind = ANTHROPIC_ERRORS.get(self.status, "api_error" if self.status >= 500 else None)
        return {"type": "error", "error": {"type": kind or self.type, "message": self.message}}


def openai_error_kind(status: int) -> tuple[str, str | None]:
    """OpenAI's (type, code) for a failure with this HTTP status."""
    if status >= 500:
        return "server_error", "server_error"
    return OPENAI_ERRORS.get(status, ("invalid_request_error", None))


def count_tokens(text: str) -> int:
    """A stable, tokenizer-free token count: words and punctuation marks."""
    return len(TOKEN.findall(text))


def _strings(value: Any) -> list[str]:
    """Every text a request carries, in order (message contents, parts, prompts, inputs)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return [value["text"]]
        texts: list[str] = []
        for key in ("system", "instructions", "content", "input", "prompt", "messages"):
            if key in value:
                texts.extend(_strings(value[key]))
        return texts
    return []


def prompt_text(body: dict[str, Any]) -> str:
    """The prompt of a request body of any supported endpoint, as one string."""
    return "\n".join(_strings(body))


def reply_words(model: str, prompt: str, variant: int = 0) -> list[str]:
    """The deterministic reply (words; the last one ends with a period) for this model and prompt."""
    digest = hashlib.sha256(f"{model}\x00{prompt}\x00{variant}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    words = [rng.choice(VOCABULARY) for _ in range(rng.randint(6, 24))]
    words[0] = words[0].capitalize()
    return words


def reply_text(
    model: str, prompt: str, max_tokens: int | None, variant: int = 0
) -> tuple[str, int, bool]:
    """(text, completion tokens, truncated): the full reply ends with '.', one token more."""
    words = reply_words(model, prompt, variant)
    full_tokens = len(words) + 1
    if max_tokens is not None and max_tokens < full_tokens:
        return " ".join(words[:max_tokens]), max_tokens, True
    return " ".join(words) + ".", full_tokens, False


def unit_vector(model: str, text: str, dimensions: int) -> list[float]:
    """A stable pseudo-random unit vector for this text."""
    digest = hashlib.sha256(f"{model}\x00{text}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _short_id(seed_key: str, size: int = 24) -> str:
    return hashlib.sha256(seed_key.encode()).hexdigest()[:size]


def _positive_int(body: dict[str, Any], name: str, minimum: int = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestFailure(
            400,
            f"Invalid type for '{name}': expected an integer, but got {type(value).__name__} instead.",
            code="invalid_type",
            param=name,
        )
    if value < minimum:
        raise RequestFailure(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, "
            f"but got {value} instead.",
            code="integer_below_min_value",
            param=name,
        )
    return value


def _require(body: dict[str, Any], name: str) -> Any:
    if body.get(name) in (None, "", []):
        raise RequestFailure(
            400,
            f"Missing required parameter: '{name}'.",
            code="missing_required_parameter",
            param=name,
        )
    return body[name]


def _openai_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _schema_value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value valid under the supported words of a JSON schema (see results.structured)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for word in ("anyOf", "oneOf"):
        if schema.get(word):
            return _schema_value(schema[word][0], rng, depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        real = [k for k in kind if k != "null"]
        kind = real[0] if real else "null"
    if kind == "object":
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        return {
            name: _schema_value(sub, rng, depth + 1)
            for name, sub in properties.items()
            if name in required or rng.random() < 0.7
        }
    if kind == "array":
        return [
            _schema_value(schema.get("items"), rng, depth + 1) for _ in range(rng.randint(1, 3))
        ]
    if kind == "integer":
        return rng.randint(0, 100)
    if kind == "number":
        return round(rng.uniform(0, 1), 4)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 4)))


def _broken_value(schema: dict[str, Any], rng: random.Random) -> Any:
    """JSON the schema refuses: a required property left out, else a property of a wrong type."""
    value = _schema_value(schema, rng)
    required = list(schema.get("required") or [])
    if required and isinstance(value, dict):
        value.pop(required[0], None)
        return value
    return [value]  # an array where an object is wanted


def structured_answer(
    body: dict[str, Any],
    schema: dict[str, Any],
    *,
    model: str,
    seed_key: str,
    bad_rate: float,
    seed: int,
) -> tuple[str | None, Any]:
    """(bad kind or None, answer): the answer a structured request gets, valid unless a marker
    or the seeded `bad_rate` draw asks for a bad one (invalid, schema, refusal)."""
    text = orjson.dumps(body).decode()
    marker = ANSWER_MARKER.search(text)
    bad = marker.group(1) if marker else None
    if bad is None and bad_rate > 0:
        draw = random.Random(f"answer:{seed}:{seed_key}").random()
        if draw < bad_rate:
            bad = "invalid" if draw < bad_rate / 2 else "refusal"
    digest = hashlib.sha256(f"{model}\x00{prompt_text(body)}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    if bad == "schema":
        return bad, _broken_value(schema, rng)
    return bad, _schema_value(schema, rng)


def _bad_text(answer: Any) -> str:
    """What a model says when it should have answered with JSON and did not quite."""
    return "Sure! Here is the answer: " + orjson.dumps(answer).decode()[:-1]


def _chat_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise RequestFailure(
                400,
                "Missing required parameter: 'response_format.json_schema'.",
                param="response_format",
            )
        return spec["schema"]
    return None


def _chat(
    body: dict[str, Any], model: str, seed_key: str, created: int, bad_rate: float, seed: int
) -> dict[str, Any]:
    schema = _chat_schema(body)
    if schema is not None:
        return _chat_structured(body, model, seed_key, created, schema, bad_rate, seed)
    messages = _require(body, "messages")
    if not isinstance(messages, list):
        raise RequestFailure(
            400, "Invalid type for 'messages': expected an array.", param="messages"
        )
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    n = _positive_int(body, "n") or 1
    prompt = prompt_text({"messages": messages})
    choices, completion_tokens = [], 0
    for index in range(n):
        text, tokens, truncated = reply_text(model, prompt, max_tokens, index)
        completion_tokens += tokens
        choices.append(
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "length" if truncated else "stop",
            }
        )
    prompt_tokens = count_tokens(prompt) + 3 * len(messages) + 3
    return {
        "id": f"chatcmpl-{_short_id(seed_key, 29)}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _openai_usage(prompt_tokens, completion_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def _chat_structured(
    body: dict[str, Any],
    model: str,
    seed_key: str,
    created: int,
    schema: dict[str, Any],
    bad_rate: float,
    seed: int,
) -> dict[str, Any]:
    """A chat completion whose message holds the structured answer (or a bad one)."""
    messages = _require(body, "messages")
    bad, answer = structured_answer(
        body, schema, model=model, seed_key=seed_key, bad_rate=bad_rate, seed=seed
    )
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if bad == "refusal":
        message["refusal"] = REFUSAL
    else:
        message["content"] = (
            _bad_text(answer) if bad == "invalid" else orjson.dumps(answer).decode()
        )
    completion_tokens = count_tokens(message["content"] or REFUSAL)
    prompt_tokens = count_tokens(prompt_text({"messages": messages})) + 3 * len(messages) + 3
    return {
        "id": f"chatcmpl-{_short_id(seed_key, 29)}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _openai_usage(prompt_tokens, completion_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def _completion(body: dict[str, Any], model: str, seed_key: str, created: int) -> dict[str, Any]:
    prompt = _require(body, "prompt")
    prompts = prompt if isinstance(prompt, list) else [prompt]
    max_tokens = _positive_int(body, "max_tokens", minimum=0)
    max_tokens = 16 if max_tokens is None else max_tokens
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, item in enumerate(prompts):
        item_text = prompt_text({"prompt": item})
        text, tokens, truncated = reply_text(model, item_text, max_tokens)
        prompt_tokens += count_tokens(item_text)
        completion_tokens += tokens
        choices.append(
            {
                "text": text,
                "index": index,
                "logprobs": None,
                "finish_reason": "length" if truncated else "stop",
            }
        )
    usage = _openai_usage(prompt_tokens, completion_tokens)
    return {
        "id": f"cmpl-{_short_id(seed_key, 29)}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {
            key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
        "system_fingerprint": "fp_emulator",
    }


def _embeddings(body: dict[str, Any], model: str, default_dimensions: int) -> dict[str, Any]:
    raw = _require(body, "input")
    items = raw if isinstance(raw, list) and not all(isinstance(x, int) for x in raw) else [raw]
    dimensions = _positive_int(body, "dimensions") or default_dimensions
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise RequestFailure(
            400,
            f"Invalid value for 'encoding_format': '{encoding}'. Supported values are: "
            "'float' and 'base64'.",
            code="invalid_value",
            param="encoding_format",
        )
    data, prompt_tokens = [], 0
    for index, item in enumerate(items):
        text = item if isinstance(item, str) else " ".join(str(token) for token in item)
        prompt_tokens += count_tokens(text)
        vector = unit_vector(model, text, dimensions)
        embedding: Any = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _responses(
    body: dict[str, Any], model: str, seed_key: str, created: int, bad_rate: float, seed: int
) -> dict[str, Any]:
    _require(body, "input")
    max_tokens = _positive_int(body, "max_output_tokens", minimum=16)
    prompt = prompt_text({"instructions": body.get("instructions"), "input": body["input"]})
    text, tokens, truncated = reply_text(model, prompt, max_tokens)
    content: dict[str, Any] = {"type": "output_text", "annotations": [], "logprobs": []}
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        bad, answer = structured_answer(
            body,
            fmt.get("schema") or {},
            model=model,
            seed_key=seed_key,
            bad_rate=bad_rate,
            seed=seed,
        )
        truncated = False
        if bad == "refusal":
            content = {"type": "refusal", "refusal": REFUSAL}
            text = REFUSAL
        else:
            text = _bad_text(answer) if bad == "invalid" else orjson.dumps(answer).decode()
        tokens = count_tokens(text)
    if content["type"] == "output_text":
        content["text"] = text
    prompt_tokens = count_tokens(prompt)
    ident = _short_id(seed_key, 48)
    return {
        "id": f"resp_{ident}",
        "object": "response",
        "created_at": created,
        "status": "incomplete" if truncated else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": max_tokens,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{_short_id(seed_key + ':msg', 48)}",
                "status": "incomplete" if truncated else "completed",
                "role": "assistant",
                "content": [content],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + tokens,
        },
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _anthropic_required(body: dict[str, Any], name: str) -> Any:
    if body.get(name) is None:
        raise RequestFailure(400, f"{name}: Field required", type="invalid_request_error")
    return body[name]


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool `tool_choice` forces, when it is one of the request's tools."""
    choice = body.get("tool_choice")
    if not (isinstance(choice, dict) and choice.get("type") == "tool"):
        return None
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("name") == choice.get("name"):
            return tool
    raise RequestFailure(
        400,
        f"tool_choice: tool {choice.get('name')!r} is not in tools",
        type="invalid_request_error",
    )


def _messages(
    body: dict[str, Any], model: str, seed_key: str, bad_rate: float, seed: int
) -> dict[str, Any]:
    messages = _anthropic_required(body, "messages")
    max_tokens = _anthropic_required(body, "max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestFailure(
            400,
            "max_tokens: Input should be greater than or equal to 1",
            type="invalid_request_error",
        )
    prompt = prompt_text({"system": body.get("system"), "messages": messages})
    text, tokens, truncated = reply_text(model, prompt, max_tokens)
    digest = hashlib.sha256(seed_key.encode()).digest()
    ident = base64.b32encode(digest).decode().rstrip("=").lower()[:22]
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    stop_reason = "max_tokens" if truncated else "end_turn"
    tool = _forced_tool(body)
    if tool is not None:
        bad, answer = structured_answer(
            body,
            tool.get("input_schema") or {},
            model=model,
            seed_key=seed_key,
            bad_rate=bad_rate,
            seed=seed,
        )
        if bad == "refusal":
            content, stop_reason = [{"type": "text", "text": REFUSAL}], "refusal"
        elif bad == "invalid":
            content, stop_reason = [{"type": "text", "text": _bad_text(answer)}], "end_turn"
        else:
            tool_use = {"type": "tool_use", "id": f"toolu_01{ident}", "name": tool["name"]}
            content, stop_reason = [{**tool_use, "input": answer}], "tool_use"
        tokens = count_tokens(orjson.dumps(content).decode())
    return {
        "id": f"msg_01{ident}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": count_tokens(prompt),
            "output_tokens": tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }


def injected_failure(body: dict[str, Any], *, seed_key: str, error_rate: float, seed: int) -> None:
    """Raise the failure a `[[fail:NNN]]` marker or the seeded error-rate draw asks for."""
    match = FAIL_MARKER.search(orjson.dumps(body).decode())
    if match:
        status = int(match.group(1))
        if status >= 400:
            raise RequestFailure(status, f"Injected failure: HTTP {status} ([[fail:{status}]]).")
    if error_rate > 0:
        draw = random.Random(f"{seed}:{seed_key}").random()
        if draw < error_rate:
            raise RequestFailure(500, "The server had an error while processing your request.")


def respond(
    endpoint: str,
    body: Any,
    *,
    seed_key: str,
    created: int,
    error_rate: float = 0.0,
    seed: int = 0,
    default_dimensions: int = 1536,
    bad_answer_rate: float = 0.0,
) -> dict[str, Any]:
    """The success body for one request to `endpoint`; raises RequestFailure as the API would."""
    if not isinstance(body, dict):
        raise RequestFailure(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        if endpoint == "/v1/messages":
            raise RequestFailure(400, "model: Field required", type="invalid_request_error")
        raise RequestFailure(400, "you must provide a model parameter", param="model")
    injected_failure(body, seed_key=seed_key, error_rate=error_rate, seed=seed)
    if endpoint == "/v1/chat/completions":
        return _chat(body, model, seed_key, created, bad_answer_rate, seed)
    if endpoint == "/v1/completions":
        return _completion(body, model, seed_key, created)
    if endpoint == "/v1/embeddings":
        return _embeddings(body, model, default_dimensions)
    if endpoint == "/v1/responses":
        return _responses(body, model, seed_key, created, bad_answer_rate, seed)
    if endpoint == "/v1/messages":
        return _messages(body, model, seed_key, bad_answer_rate, seed)
    raise RequestFailure(404, f"Invalid URL (POST {endpoint})", type="invalid_request_error")
