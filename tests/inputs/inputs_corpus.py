"""The malformed-input corpus: each case is a file's bytes and the exact problems it must give.

Expected problems are `LINE: field: reason` (or `field: reason`/`reason` without a line), i.e.
`str(problem)` without the leading `FILE:`. Shared with other suites (reliability) by import.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

CHAT = "/v1/chat/completions"
ENDPOINTS_TEXT = (
    "/v1/chat/completions, /v1/embeddings, /v1/completions, /v1/responses, /v1/messages"
)
SUPPORTED = "anthropic, azure, bedrock, gemini, openai, vertex"

_UNSET: Any = object()


def openai_line(
    custom_id: Any = "req-1",
    model: Any = "openai/gpt-4o-mini",
    method: Any = "POST",
    url: Any = CHAT,
    body: Any = _UNSET,
    **extra: Any,
) -> bytes:
    """One OpenAI batch line (compact JSON); `drop=[...]` removes keys, extra kwargs add keys."""
    if body is _UNSET:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    obj: dict[str, Any] = {"custom_id": custom_id, "method": method, "url": url, "body": body}
    for key in extra.pop("drop", ()):
        del obj[key]
    obj.update(extra)
    return json.dumps(obj, separators=(",", ":")).encode()


def anthropic_line(
    custom_id: Any = "q1", model: Any = "anthropic/claude-3-5-haiku", **params: Any
) -> bytes:
    """One Anthropic-style line {"custom_id","params"}."""
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    body.update(params)
    return json.dumps({"custom_id": custom_id, "params": body}, separators=(",", ":")).encode()


def jsonl(*lines: bytes, end: bytes = b"\n") -> bytes:
    return b"".join(line + end for line in lines)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("requests.jsonl", jsonl(openai_line()))
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """One corpus file and what validating it must report."""

    name: str
    content: bytes
    problems: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


OK = openai_line
CASES: list[Case] = [
    # --- file-level
    Case("empty", b"", ["file is empty (no requests)"]),
    Case(
        "only_blank_lines",
        b"\n  \n\t\n",
        ["no requests (the file has only 3 blank lines)"],
        notes=["3 blank line(s) skipped"],
    ),
    Case("zip_renamed", _zip_bytes(), ["file is a zip archive, not JSONL (unzip it first)"]),
    Case(
        "utf16", "\ufeff{}\n".encode("utf-16-le"), ["file is UTF-16 encoded; convert it to UTF-8"]
    ),
    Case(
        "binary_nul",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        ["file looks binary (NUL byte at offset 8), not JSONL text"],
    ),
    # --- encoding and framing (accepted, noted)
    Case(
        "bom_and_crlf",
        b"\xef\xbb\xbf" + jsonl(OK("a"), OK("b"), end=b"\r\n"),
        [],
        notes=[
            "UTF-8 byte order mark at the start of the file (ignored)",
            "CRLF line endings (accepted)",
        ],
    ),
    Case(
        "blank_lines_counted",
        jsonl(OK("a"), b"", b"   ", OK("b")),
        [],
        notes=["2 blank line(s) skipped"],
    ),
    Case("no_final_newline_ok", jsonl(OK("a")) + OK("b"), []),
    # --- JSON
    Case(
        "not_utf8",
        jsonl(OK("a"), b'{"custom_id":"caf\xe9"}'),
        ["2: not valid UTF-8 (byte 0xe9 at byte 18)"],
    ),
    Case(
        "invalid_json",
        jsonl(OK("a"), b'{"custom_id": "b",}'),
        ["2: invalid JSON at column 18: trailing comma is not allowed"],
    ),
    Case(
        "not_an_object",
        jsonl(b"[1, 2]", b'"text"', b"42", b"null"),
        [
            "1: line is a JSON array, not an object",
            "2: line is a JSON string, not an object",
            "3: line is a JSON number, not an object",
            "4: line is a JSON null, not an object",
        ],
    ),
    Case(
        "trailing_garbage",
        jsonl(OK("a") + b" trailing"),
        [f"1: trailing garbage after the JSON value at column {len(OK('a')) + 2}"],
    ),
    Case(
        "truncated_last_line",
        jsonl(OK("a")) + OK("b")[:40],
        ["2: truncated: the last line ends inside its JSON value (no newline at end of file)"],
    ),
    Case(
        "nan",
        jsonl(OK("a", body={"model": "openai/m", "temperature": float("nan")})),
        ["1: NaN at column 104 is not valid JSON"],
    ),
    Case(
        "infinity_number",
        jsonl(b'{"custom_id":"a","x":1e999}'),
        ["1: number at column 22 is out of range (overflows a double)"],
    ),
    Case(
        "big_integer",
        jsonl(OK("a", body={"model": "openai/m", "seed": 10**30})),
        ["1: integer 1000000000000000000000000000000 does not fit in 64 bits"],
    ),
    Case(
        "deep_nesting",
        jsonl(b"[" * 10_000 + b"]" * 10_000),
        ["1: JSON nested deeper than 1024 levels"],
    ),
    Case(
        "deep_body",
        jsonl(OK("a", body={"model": "openai/m", "x": json.loads("[" * 300 + "]" * 300)})),
        ["1: JSON nested deeper than 254 levels"],
    ),
    Case(
        "duplicate_keys",
        jsonl(
            b'{"custom_id":"a","custom_id":"b","method":"POST","url":"'
            + CHAT.encode()
            + b'","body":{"model":"openai/m"}}'
        ),
        ["1: custom_id: key appears more than once in the object"],
    ),
    Case(
        "duplicate_body_model_key",
        jsonl(
            b'{"custom_id":"a","method":"POST","url":"'
            + CHAT.encode()
            + b'","body":{"model":"openai/m","model":"openai/n"}}'
        ),
        ["1: body.model: key appears more than once in the object"],
    ),
    # --- custom_id
    Case("custom_id_missing", jsonl(OK(drop=["custom_id"])), ["1: custom_id: missing"]),
    Case("custom_id_empty", jsonl(OK("")), ["1: custom_id: empty"]),
    Case(
        "custom_id_not_string",
        jsonl(OK(7), OK(None), OK(["x"])),
        [
            "1: custom_id: must be a string, got number",
            "2: custom_id: must be a string, got null",
            "3: custom_id: must be a string, got array",
        ],
    ),
    Case(
        "custom_id_duplicate",
        jsonl(OK("a"), OK("b"), OK("a"), OK("a")),
        [
            "3: custom_id: duplicate 'a', also used on line 1",
            "4: custom_id: duplicate 'a', also used on line 1",
        ],
    ),
    Case(
        "custom_id_anthropic_pattern",
        jsonl(anthropic_line("ok_1-A"), anthropic_line("has space"), anthropic_line("x" * 65)),
        [
            "2: custom_id: 'has space' is not allowed by anthropic (must match [A-Za-z0-9_-]{1,64})",
            "3: custom_id: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is not allowed by anthropic "
            "(must match [A-Za-z0-9_-]{1,64})",
        ],
    ),
    # --- method, url, body
    Case(
        "method_not_post",
        jsonl(OK("a", method="GET"), OK("b", drop=["method"])),
        ["1: method: must be \"POST\", got 'GET'", '2: method: missing (must be "POST")'],
    ),
    Case(
        "url_not_batch_endpoint",
        jsonl(OK("a", url="/v1/images/generations"), OK("b", url=3), OK("c", drop=["url"])),
        [
            f"1: url: '/v1/images/generations' is not a batch endpoint (one of {ENDPOINTS_TEXT})",
            f"2: url: a number is not a batch endpoint (one of {ENDPOINTS_TEXT})",
            "3: url: missing",
        ],
    ),
    Case(
        "url_differs",
        jsonl(OK("a"), OK("b", url="/v1/embeddings", body={"model": "openai/e", "input": "x"})),
        ["2: url: /v1/embeddings differs from the file's endpoint /v1/chat/completions"],
    ),
    Case(
        "body_missing",
        jsonl(OK("a", drop=["body"])),
        ["1: body: missing (an OpenAI batch line needs body; an Anthropic-style line params)"],
    ),
    Case(
        "body_not_object",
        jsonl(OK("a", body=[1]), OK("b", body="text")),
        ["1: body: must be a JSON object, got array", "2: body: must be a JSON object, got string"],
    ),
    Case(
        "params_not_object",
        jsonl(b'{"custom_id":"q","params":"x"}'),
        ["1: params: must be a JSON object, got string"],
    ),
    Case(
        "body_model_missing",
        jsonl(
            OK("a", body={"messages": []}), OK("b", body={"model": ""}), OK("c", body={"model": 5})
        ),
        [
            "1: body.model: missing",
            "2: body.model: must be a non-empty string",
            "3: body.model: must be a non-empty string",
        ],
    ),
    Case(
        "params_model_missing",
        jsonl(b'{"custom_id":"q","params":{"max_tokens":1}}'),
        ["1: params.model: missing"],
    ),
    Case(
        "stream_true",
        jsonl(
            OK("a", body={"model": "openai/m", "stream": True}),
            OK("b", body={"model": "openai/m", "stream": False}),
        ),
        ["1: body.stream: true is not allowed in a batch request"],
    ),
    # --- model and provider
    Case(
        "model_without_provider",
        jsonl(OK("a", model="gpt-4o")),
        [
            "1: body.model: 'gpt-4o' is not in provider/model form and no default provider is "
            "configured"
        ],
    ),
    Case(
        "model_without_provider_default_ok",
        jsonl(OK("a", model="gpt-4o")),
        [],
        options={"default_provider": "openai"},
    ),
    Case(
        "unknown_provider",
        jsonl(OK("a", model="mistral/large")),
        [f"1: body.model: unknown provider 'mistral' (supported: {SUPPORTED})"],
    ),
    Case(
        "several_models_allowed",
        jsonl(OK("a", model="openai/m1"), OK("b", model="openai/m2"), OK("c", model="azure/m1")),
        [],
    ),
    Case(
        "anthropic_needs_messages_endpoint",
        jsonl(OK("a", model="anthropic/claude")),
        ["1: url: anthropic batches serve /v1/messages, not /v1/chat/completions"],
    ),
    # --- size
    Case(
        "request_over_limit",
        jsonl(OK("a"), OK("b", body={"model": "openai/m", "p": "x" * 2000})),
        ["2: request is 2,090 bytes, over openai's per-request limit of 1,000 bytes"],
        options={
            "limits": {
                "openai": {"max_requests": 10, "max_bytes": 100_000, "max_bytes_per_request": 1000}
            }
        },
    ),
    # --- combinations: every problem of a line, every bad line of a file
    Case(
        "many_problems_one_line",
        jsonl(OK(5, method="PUT", url="/v2/x", body={"model": "nomodel", "stream": True})),
        [
            "1: custom_id: must be a string, got number",
            "1: method: must be \"POST\", got 'PUT'",
            f"1: url: '/v2/x' is not a batch endpoint (one of {ENDPOINTS_TEXT})",
            "1: body.stream: true is not allowed in a batch request",
            "1: body.model: 'nomodel' is not in provider/model form and no default provider is "
            "configured",
        ],
    ),
    Case(
        "mixed_file",
        jsonl(OK("a"), b"", b"{oops", OK("a"), OK("c", method="GET"), b"[]", OK("d")),
        [
            "3: invalid JSON at column 2: unexpected character, expected a string key",
            "4: custom_id: duplicate 'a', also used on line 1",
            "5: method: must be \"POST\", got 'GET'",
            "6: line is a JSON array, not an object",
        ],
        notes=["1 blank line(s) skipped"],
    ),
]
