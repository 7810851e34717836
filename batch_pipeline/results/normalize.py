"""Pure functions: one provider result item -> the provider-independent columns of one row.

A result item is an OpenAI output/error file line, a Bifrost `/results` item (OpenAI, Anthropic,
Gemini or Bedrock flavour), already parsed into a dict. `classify_item` decides whether it is a
result or an error and extracts the columns; the caller adds the batch context (custom_id,
input_line, batch_id, provider, ...). Hot path of every collect, so plain dicts, no models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, NamedTuple

import orjson

from batch_pipeline.results.shapes import SHAPES

# Provider finish/stop reasons -> the normalized vocabulary (lower-cased lookup; unknown values
# pass through lower-cased so nothing is lost).
_FINISH_REASONS: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    # Anthropic stop_reason
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # Responses API incomplete_details.reason
    "max_output_tokens": "length",
    # Gemini finishReason
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "image_safety": "content_filter",
}

# Error codes/types that name a transient condition: the same request may well succeed later.
_RETRYABLE_CODES = frozenset(
    {
        "rate_limit_exceeded",
        "rate_limit_error",
        "overloaded_error",
        "api_error",
        "server_error",
        "internal_error",
        "service_unavailable",
        "timeout",
        "timeout_error",
        "request_timed_out",
    }
)
# gRPC status codes (Gemini reports them as numbers) that mean "try again".
_RETRYABLE_GRPC_CODES = frozenset({4, 8, 10, 13, 14})

_JSON_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"
_CUSTOM_ID_RE = re.compile(rb'"custom_id"\s*:\s*("(?:[^"\\\r\n]|\\.){1,512}")')


class Outcome(NamedTuple):
    """What one result item became: a results row (is_result) or an errors row, minus context."""

    is_result: bool
    row: dict[str, Any]


def parse_json(line: bytes | str) -> Any:
    """Parse one JSON text fast (orjson), falling back to the stdlib for what orjson refuses
    (lone surrogate escapes, NaN); raises ValueError when the text is not JSON. Note: orjson
    reads integers beyond 64 bits as floats; no provider body carries such numbers."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def dump_json(value: Any) -> bytes:
    """Serialize a parsed JSON value back to compact UTF-8 JSON text without loss."""
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, lone surrogates: the stdlib keeps them exactly
        return json.dumps(value, separators=(",", ":")).encode()


def value_text(line: bytes | str, path: tuple[str, ...]) -> bytes | None:
    """The exact JSON text of the value at `path` (object keys; the last of repeated keys, as
    the parsers keep) in a line of JSON, or None when it is not there or not readable."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        span = _value_span(text, _skip_space(text, 0), path)
        return None if span is None else text[span[0] : span[1]].encode("utf-8")
    except (ValueError, IndexError):  # UnicodeError is a ValueError
        return None


def _skip_space(text: str, position: int) -> int:
    while text[position] in _JSON_SPACE:
        position += 1
    return position


def _value_span(text: str, position: int, path: tuple[str, ...]) -> tuple[int, int] | None:
    """Span of the value at `path` inside the object starting at `position`."""
    if text[position] != "{":
        return None
    span: tuple[int, int] | None = None
    position = _skip_space(text, position + 1)
    if text[position] == "}":
        return None
    while True:
        if text[position] != '"':
            raise ValueError("expected a key")
        key, position = scanstring(text, position + 1)
        position = _skip_space(text, position)
        if text[position] != ":":
            raise ValueError("expected ':'")
        start = _skip_space(text, position + 1)
        _, end = _JSON_DECODER.raw_decode(text, start)
        if key == path[0]:
            span = (start, end) if len(path) == 1 else _value_span(text, start, path[1:])
        position = _skip_space(text, end)
        if text[position] == "}":
            return span
        if text[position] != ",":
            raise ValueError("expected ',' or '}'")
        position = _skip_space(text, position + 1)


def recover_custom_id(raw: bytes | str) -> str | None:
    """The custom_id of a line that cannot be parsed as a whole, when it is still readable."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    match = _CUSTOM_ID_RE.search(data)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str) and value else None


def normalize_finish_reason(reason: Any) -> str | None:
    """Map a provider's finish/stop reason onto stop, length, content_filter, tool_calls, ..."""
    if type(reason) is not str or not reason:
        return None
    known = _FINISH_REASONS.get(reason)  # already lower-case: the common case
    if known is not None:
        return known
    lowered = reason.lower()
    return _FINISH_REASONS.get(lowered, lowered)


def is_retryable_status(status: int | None) -> bool:
    """HTTP statuses worth retrying: timeouts, conflicts, rate limits and server errors."""
    return status is not None and (status in (408, 409, 429) or status >= 500)


def is_retryable_code(code: str | None) -> bool:
    """True when a provider error code names a transient condition."""
    if code is None:
        return False
    if code.isdigit():
        number = int(code)
        return is_retryable_status(number) if number >= 100 else number in _RETRYABLE_GRPC_CODES
    return code.lower() in _RETRYABLE_CODES


def classify_item(item: Mapping[str, Any], line: bytes | str | None = None) -> Outcome:
    """Decide what a result item (with a custom_id) means and extract its row columns.

    `line`, the JSON text the item was parsed from, makes the body column the body's exact
    text in it; without it the body is the parsed body written back as compact JSON.
    """
    result = item.get("result")
    if isinstance(result, dict):
        return _from_anthropic_result(item, result, line)
    response = item.get("response")
    error = item.get("error")
    if isinstance(response, dict) and response.get("status_code") is not None:
        status = _as_int(response.get("status_code"))
        request_id = _as_str(response.get("request_id"))
        if status is not None and 200 <= status < 300 and not error:
            body = response.get("body")
            text = value_text(line, ("response", "body")) if line is not None else None
            return Outcome(True, success_columns(body, status, request_id, text))
        return _from_http_error(status, response.get("body"), error)
    if isinstance(error, dict):
        return _from_error_object(error)
    return error_outcome(
        "parse", "no_outcome", "item has no response, result or error", retryable=True
    )


def error_outcome(
    stage: str,
    code: str | None,
    message: str | None,
    *,
    retryable: bool,
    status_code: int | None = None,
) -> Outcome:
    """An errors-row outcome with the classification columns filled in."""
    return Outcome(
        False,
        {
            "stage": stage,
            "status_code": status_code,
            "error_code": code,
            "error_message": message,
            "retryable": retryable,
        },
    )


def success_columns(
    body: Any, status: int | None, request_id: str | None, text: bytes | None = None
) -> dict[str, Any]:
    """Columns of a results row from a successful response body of any supported endpoint;
    `text` is the body's own JSON text when known (else the body is written back as JSON)."""
    row: dict[str, Any] = {
        "status_code": status,
        "request_id": request_id,
        "output_text": None,
        "finish_reason": None,
        "embedding": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "cached_tokens": None,
        "reasoning_tokens": None,
        "body": text if text is not None else dump_json(body),
        "response": body,  # the parsed body, for a structured answer (not a column)
        "model": None,
        "endpoint": None,
    }
    if isinstance(body, dict):
        _fill_from_body(row, body)
    return row


def _fill_from_body(row: dict[str, Any], body: dict[str, Any]) -> None:
    """Recognize the body by its shape (works without knowing the endpoint) and fill the row."""
    model = body.get("model")
    row["model"] = model if isinstance(model, str) else None
    for shape in SHAPES:
        if shape.claims(body):
            answer = shape.read(body)
            row["endpoint"] = answer.endpoint
            row["output_text"] = answer.output_text
            row["finish_reason"] = normalize_finish_reason(answer.finish_reason)
            row["embedding"] = answer.embedding
            break
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = body.get("usageMetadata")  # Gemini's GenerateContentResponse
    if isinstance(usage, dict):
        _fill_tokens(row, usage)


def _fill_tokens(row: dict[str, Any], usage: dict[str, Any]) -> None:
    """OpenAI usage, or the counts of Anthropic/Responses, Bedrock Converse or Gemini, in
    OpenAI's meaning (prompt includes cached tokens, completion includes reasoning)."""
    prompt = _as_int(usage.get("prompt_tokens"))
    completion = _as_int(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        prompt, completion = _other_counts(usage)
    total = _as_int(usage.get("total_tokens"))
    if total is None:
        total = _as_int(usage.get("totalTokens")) or _as_int(usage.get("totalTokenCount"))
    if total is None and prompt is not None:
        total = prompt + (completion or 0)
    row["prompt_tokens"] = prompt
    row["completion_tokens"] = completion
    row["total_tokens"] = total
    # OpenAI: *_tokens_details (chat) or input/output_tokens_details (Responses); Anthropic:
    # cache reads; Gemini: cachedContentTokenCount and thoughtsTokenCount.
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    completion_details = usage.get("completion_tokens_details") or usage.get(
        "output_tokens_details"
    )
    row["cached_tokens"] = (
        _as_int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else None
    )
    for name in ("cache_read_input_tokens", "cachedContentTokenCount", "cacheReadInputTokens"):
        if row["cached_tokens"] is None:
            row["cached_tokens"] = _as_int(usage.get(name))
    row["reasoning_tokens"] = (
        _as_int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else _as_int(usage.get("thoughtsTokenCount"))
    )


def _other_counts(usage: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) from input/output counts: Anthropic and Bedrock Converse count
    cache reads/writes apart from the input, Gemini counts thoughts apart from the answer."""
    for prompt_name, completion_name, extra_names in (
        (
            "input_tokens",
            "output_tokens",
            ("cache_creation_input_tokens", "cache_read_input_tokens"),
        ),
        ("inputTokens", "outputTokens", ("cacheWriteInputTokens", "cacheReadInputTokens")),
    ):
        prompt = _as_int(usage.get(prompt_name))
        completion = _as_int(usage.get(completion_name))
        if prompt is not None or completion is not None:
            if prompt is not None:
                prompt += sum(_as_int(usage.get(name)) or 0 for name in extra_names)
            return prompt, completion
    prompt = _as_int(usage.get("promptTokenCount"))
    completion = _as_int(usage.get("candidatesTokenCount"))
    thoughts = _as_int(usage.get("thoughtsTokenCount"))
    if completion is not None and thoughts is not None:
        completion += thoughts
    return prompt, completion


def _from_http_error(status: int | None, body: Any, error: Any) -> Outcome:
    """A response with a non-2xx status (OpenAI error file, Bedrock record errors)."""
    code, message = _body_error(body)
    if isinstance(error, dict):
        code = code or _as_code(error.get("code"))
        message = message or _as_str(error.get("message")) or None
    if message is None:
        message = f"HTTP {status}" if status is not None else "request failed"
    retryable = is_retryable_status(status) or is_retryable_code(code)
    return error_outcome("request", code, message, retryable=retryable, status_code=status)


def _body_error(body: Any) -> tuple[str | None, str | None]:
    """(code or type, message) of an error body: OpenAI `{error:{...}}`, Anthropic, or text."""
    if isinstance(body, str):
        return None, body or None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        code = _as_code(error.get("code")) or _as_code(error.get("type"))
        return code, _as_str(error.get("message")) or None
    if isinstance(error, str):
        return None, error or None
    return None, _as_str(body.get("message")) or None


def _from_error_object(error: dict[str, Any]) -> Outcome:
    """An item with only `error` (OpenAI error file: expired/cancelled requests; Gemini errors)."""
    code = _as_code(error.get("code"))
    message = _as_str(error.get("message")) or None
    if code == "batch_expired":
        return error_outcome("expired", code, message, retryable=True)
    if code in ("batch_cancelled", "batch_canceled"):
        return error_outcome("canceled", code, message, retryable=True)
    # Gemini's errors carry the HTTP status as their code ("429")
    status = int(code) if code is not None and code.isdigit() and len(code) == 3 else None
    return error_outcome(
        "request", code, message, retryable=is_retryable_code(code), status_code=status
    )


def _from_anthropic_result(
    item: Mapping[str, Any], result: dict[str, Any], line: bytes | str | None
) -> Outcome:
    """Anthropic-style `result: {type, message | error}` items."""
    kind = result.get("type")
    if kind == "succeeded":
        text = value_text(line, ("result", "message")) if line is not None else None
        return Outcome(True, success_columns(result.get("message"), None, None, text))
    if kind == "errored":
        code, message = _anthropic_error(item, result)
        return error_outcome("request", code, message, retryable=is_retryable_code(code))
    if kind in ("canceled", "cancelled"):
        message = "request canceled before it was processed"
        return error_outcome("canceled", "canceled", message, retryable=True)
    if kind == "expired":
        message = "request not processed before the batch expired"
        return error_outcome("expired", "expired", message, retryable=True)
    return error_outcome(
        "parse", "unknown_result_type", f"unknown result type {kind!r}", retryable=True
    )


def _anthropic_error(item: Mapping[str, Any], result: dict[str, Any]) -> tuple[str, str]:
    """Code and message of an errored Anthropic result, preferring the upstream nested error
    (`result.error.error`) over Bifrost's flattened `error` (which loses it, NOTES 5.1)."""
    code: str | None = None
    message: str | None = None
    nested = result.get("error")
    if isinstance(nested, dict):
        inner = nested.get("error")
        if isinstance(inner, dict):
            code = _as_code(inner.get("type"))
            message = _as_str(inner.get("message")) or None
    outer = item.get("error")
    if isinstance(outer, dict):
        code = code or _as_code(outer.get("code"))
        message = message or _as_str(outer.get("message")) or None
    if isinstance(nested, dict):
        code = code or _as_code(nested.get("type"))
        message = message or _as_str(nested.get("message")) or None
    return code or "error", message or "request errored (the provider gave no message)"


def _as_int(value: Any) -> int | None:
    """An integer JSON value, else None (bools and floats are not counts)."""
    return value if type(value) is int else None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_code(value: Any) -> str | None:
    """Error codes arrive as strings or numbers; normalize to a non-empty string."""
    if isinstance(value, str):
        return value or None
    if type(value) is int:
        return str(value)
    return None
