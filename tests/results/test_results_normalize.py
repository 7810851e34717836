"""Classification of every provider result shape into results/errors columns (pure functions)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from batch_pipeline.results.normalize import (
    classify_item,
    dump_json,
    is_retryable_code,
    is_retryable_status,
    normalize_finish_reason,
    parse_json,
    recover_custom_id,
)


def openai_line(status: int, body: Any, **extra: Any) -> dict[str, Any]:
    """An OpenAI batch output/error file line around a response body."""
    return {
        "id": "batch_req_1",
        "custom_id": "req-1",
        "response": {"status_code": status, "request_id": "req_abc", "body": body},
        "error": None,
        **extra,
    }


CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}
CHAT_PARTS = {
    "object": "chat.completion",
    "choices": [
        {
            "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            },
            "finish_reason": "length",
        }
    ],
}
CHAT_TOOL = {
    "object": "chat.completion",
    "choices": [
        {
            "message": {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]},
            "finish_reason": "tool_calls",
        }
    ],
}
CHAT_FUNCTION = {
    "choices": [{"message": {"content": "x"}, "finish_reason": "function_call"}],
}
CHAT_FILTERED = {
    "choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}],
}
COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": "Once upon", "index": 0, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
}
RESPONSES = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-4.1-mini",
    "output": [
        {"type": "reasoning", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Bonjour", "annotations": []},
                {"type": "refusal", "refusal": "no"},
                {"type": "output_text", "text": " !", "annotations": []},
            ],
        },
    ],
    "usage": {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16},
}
RESPONSES_INCOMPLETE = {
    "object": "response",
    "status": "incomplete",
    "incomplete_details": {"reason": "max_output_tokens"},
    "output": [{"type": "message", "content": [{"type": "output_text", "text": "Bon"}]}],
    "usage": {"input_tokens": 11, "output_tokens": 16},
}
RESPONSES_TOOL = {
    "object": "response",
    "status": "completed",
    "output": [{"type": "function_call", "name": "lookup", "arguments": "{}"}],
}
MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-latest",
    "content": [
        {"type": "text", "text": "Hi "},
        {"type": "tool_use", "id": "tu_1", "name": "f", "input": {}},
        {"type": "text", "text": "there"},
    ],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 8,
        "output_tokens": 4,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 20,
    },
}
EMBEDDING = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 0.125]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 5, "total_tokens": 5},
}
EMBEDDING_B64 = {
    "object": "list",
    "data": [
        {
            "object": "embedding",
            "embedding": base64.b64encode(struct.pack("<3f", 1.5, -2.0, 0.25)).decode(),
        }
    ],
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
}
GEMINI = {
    "text": "Hallo",
    "finish_reason": "MAX_TOKENS",
    "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
}
# Vertex batch predictions: GenerateContentResponse (a thought part is not the answer; thoughts
# count apart from candidates, cached tokens inside the prompt)
VERTEX = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [{"text": "thinking...", "thought": True}, {"text": "Bonjour"}],
            },
            "finishReason": "MAX_TOKENS",
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 12,
        "candidatesTokenCount": 7,
        "thoughtsTokenCount": 2,
        "totalTokenCount": 21,
        "cachedContentTokenCount": 4,
    },
    "modelVersion": "gemini-2.5-flash",
}
# Bedrock batch records of non-Anthropic models: the Converse answer (cache reads counted apart)
CONVERSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hola"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 19, "cacheReadInputTokens": 5},
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            CHAT,
            {
                "endpoint": "/v1/chat/completions",
                "model": "gpt-4o-mini",
                "output_text": "Hello!",
                "finish_reason": "stop",
                "prompt_tokens": 9,
                "completion_tokens": 3,
                "total_tokens": 12,
                "embedding": None,
            },
            id="chat",
        ),
        pytest.param(
            CHAT_PARTS,
            {"output_text": "Hello", "finish_reason": "length", "prompt_tokens": None},
            id="chat-content-parts",
        ),
        pytest.param(
            CHAT_TOOL, {"output_text": None, "finish_reason": "tool_calls"}, id="chat-tool-calls"
        ),
        pytest.param(CHAT_FUNCTION, {"finish_reason": "tool_calls"}, id="chat-function-call"),
        pytest.param(
            CHAT_FILTERED,
            {"output_text": "", "finish_reason": "content_filter"},
            id="chat-content-filter",
        ),
        pytest.param(
            COMPLETION,
            {
                "endpoint": "/v1/completions",
                "output_text": "Once upon",
                "finish_reason": "length",
                "total_tokens": 6,
            },
            id="completions",
        ),
        pytest.param(
            RESPONSES,
            {
                "endpoint": "/v1/responses",
                "output_text": "Bonjour !",
                "finish_reason": "stop",
                "prompt_tokens": 11,
                "completion_tokens": 5,
                "total_tokens": 16,
            },
            id="responses",
        ),
        pytest.param(
            RESPONSES_INCOMPLETE,
            {"output_text": "Bon", "finish_reason": "length", "total_tokens": 27},
            id="responses-incomplete",
        ),
        pytest.param(
            RESPONSES_TOOL,
            {"output_text": None, "finish_reason": "tool_calls"},
            id="responses-function-call",
        ),
        pytest.param(
            MESSAGE,
            {
                "endpoint": "/v1/messages",
                "output_text": "Hi there",
                "finish_reason": "stop",
                "prompt_tokens": 128,
                "completion_tokens": 4,
                "total_tokens": 132,
            },
            id="anthropic-message-body",
        ),
        pytest.param(
            EMBEDDING,
            {
                "endpoint": "/v1/embeddings",
                "embedding": [0.5, -0.25, 0.125],
                "output_text": None,
                "finish_reason": None,
                "prompt_tokens": 5,
                "completion_tokens": None,
                "total_tokens": 5,
            },
            id="embeddings",
        ),
        pytest.param(EMBEDDING_B64, {"embedding": [1.5, -2.0, 0.25]}, id="embeddings-base64"),
        pytest.param(
            GEMINI,
            {
                "endpoint": None,
                "output_text": "Hallo",
                "finish_reason": "length",
                "prompt_tokens": 3,
                "total_tokens": 10,
            },
            id="gemini-flattened",
        ),
        pytest.param(
            VERTEX,
            {
                "endpoint": None,
                "output_text": "Bonjour",
                "finish_reason": "length",
                "prompt_tokens": 12,
                "completion_tokens": 9,
                "total_tokens": 21,
                "cached_tokens": 4,
                "reasoning_tokens": 2,
            },
            id="vertex-generate-content",
        ),
        pytest.param(
            CONVERSE,
            {
                "output_text": "Hola",
                "finish_reason": "stop",
                "prompt_tokens": 15,
                "completion_tokens": 4,
                "total_tokens": 19,
                "cached_tokens": 5,
            },
            id="bedrock-converse",
        ),
    ],
)
def test_successful_response_becomes_a_results_row(body: dict, expected: dict) -> None:
    outcome = classify_item(openai_line(200, body))
    assert outcome.is_result
    assert {key: outcome.row[key] for key in expected} == expected
    assert outcome.row["status_code"] == 200
    assert outcome.row["request_id"] == "req_abc"
    assert json.loads(outcome.row["body"]) == body


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
    ],
)
def test_anthropic_stop_reasons_are_normalized(reason: str, finish: str) -> None:
    outcome = classify_item(openai_line(200, {**MESSAGE, "stop_reason": reason}))
    assert outcome.row["finish_reason"] == finish


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "stop"),
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("max_output_tokens", "length"),
        ("Something_New", "something_new"),
        ("", None),
        (None, None),
        (3, None),
    ],
)
def test_normalize_finish_reason(reason: Any, expected: str | None) -> None:
    assert normalize_finish_reason(reason) == expected


ERROR_BODY_400 = {
    "error": {
        "message": "Invalid 'max_tokens'",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": None,
    }
}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            openai_line(400, ERROR_BODY_400),
            {
                "stage": "request",
                "status_code": 400,
                "error_code": "invalid_request_error",
                "error_message": "Invalid 'max_tokens'",
                "retryable": False,
            },
            id="http-400-type-as-code",
        ),
        pytest.param(
            openai_line(
                429,
                {
                    "error": {
                        "message": "slow down",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
            ),
            {"status_code": 429, "error_code": "rate_limit_exceeded", "retryable": True},
            id="http-429",
        ),
        pytest.param(
            openai_line(500, {"error": {"message": "boom", "type": "server_error"}}),
            {"status_code": 500, "error_code": "server_error", "retryable": True},
            id="http-500",
        ),
        pytest.param(
            openai_line(408, None), {"retryable": True, "error_message": "HTTP 408"}, id="408"
        ),
        pytest.param(
            openai_line(409, "conflict"), {"retryable": True, "error_message": "conflict"}, id="409"
        ),
        pytest.param(
            openai_line(
                404,
                {"type": "error", "error": {"type": "not_found_error", "message": "no model"}},
            ),
            {"error_code": "not_found_error", "error_message": "no model", "retryable": False},
            id="anthropic-error-body",
        ),
        pytest.param(
            openai_line(200, CHAT, error={"code": "server_error", "message": "late failure"}),
            {"stage": "request", "status_code": 200, "error_message": "late failure"},
            id="2xx-with-error-object",
        ),
        pytest.param(
            {
                "custom_id": "rec-1",
                "response": {"status_code": 400},
                "error": {"code": "400", "message": "ValidationException: bad input"},
            },
            {
                "status_code": 400,
                "error_code": "400",
                "error_message": "ValidationException: bad input",
                "retryable": False,
            },
            id="bedrock-record-error",
        ),
        pytest.param(
            {
                "custom_id": "req-3",
                "response": None,
                "error": {"code": "batch_expired", "message": "not executed in time"},
            },
            {
                "stage": "expired",
                "status_code": None,
                "error_code": "batch_expired",
                "error_message": "not executed in time",
                "retryable": True,
            },
            id="openai-batch-expired",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": "batch_cancelled", "message": "cancelled"}},
            {"stage": "canceled", "retryable": True},
            id="openai-batch-cancelled",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": "batch_canceled", "message": "canceled"}},
            {"stage": "canceled", "retryable": True},
            id="batch-canceled-one-l",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": "invalid_prompt", "message": "bad"}},
            {"stage": "request", "error_code": "invalid_prompt", "retryable": False},
            id="error-object-other-code",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": 429, "message": "quota"}},
            {"stage": "request", "error_code": "429", "retryable": True, "status_code": 429},
            id="gemini-numeric-http-code",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": "400", "message": "bad request"}},
            {"error_code": "400", "retryable": False, "status_code": 400},
            id="gemini-http-code-as-text",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": "", "message": "INVALID_ARGUMENT: no model"}},
            {
                "error_code": None,
                "status_code": None,
                "error_message": "INVALID_ARGUMENT: no model",
            },
            id="vertex-error-without-code",
        ),
        pytest.param(
            {
                "custom_id": "r",
                "response": {"status_code": 400},
                "error": {"code": "400", "message": "Malformed input request"},
            },
            {"stage": "request", "status_code": 400, "error_message": "Malformed input request"},
            id="bedrock-record-error",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": "14", "message": "unavailable"}},
            {"error_code": "14", "retryable": True},
            id="gemini-grpc-unavailable",
        ),
        pytest.param(
            {"custom_id": "r", "error": {"code": "3", "message": "invalid argument"}},
            {"error_code": "3", "retryable": False},
            id="gemini-grpc-invalid-argument",
        ),
    ],
)
def test_failed_request_becomes_an_errors_row(item: dict, expected: dict) -> None:
    outcome = classify_item(item)
    assert not outcome.is_result
    assert {key: outcome.row[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            {
                "custom_id": "q2",
                "result": {"type": "errored"},
                "error": {"code": "error", "message": ""},
            },
            {
                "stage": "request",
                "error_code": "error",
                "error_message": "request errored (the provider gave no message)",
                "retryable": False,
            },
            id="errored-flattened-by-bifrost",
        ),
        pytest.param(
            {
                "custom_id": "q2",
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                },
                "error": {"code": "error", "message": ""},
            },
            {"error_code": "overloaded_error", "error_message": "Overloaded", "retryable": True},
            id="errored-nested-overloaded",
        ),
        pytest.param(
            {
                "custom_id": "q2",
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "max_tokens: bad"},
                    },
                },
            },
            {"error_code": "invalid_request_error", "retryable": False},
            id="errored-nested-invalid",
        ),
        pytest.param(
            {
                "custom_id": "q2",
                "result": {"type": "errored"},
                "error": {"code": "rate_limit_error", "message": "slow"},
            },
            {"error_code": "rate_limit_error", "error_message": "slow", "retryable": True},
            id="errored-rate-limit",
        ),
        pytest.param(
            {
                "custom_id": "q2",
                "result": {"type": "errored"},
                "error": {"code": "api_error", "message": "x"},
            },
            {"retryable": True},
            id="errored-api-error",
        ),
        pytest.param(
            {"custom_id": "q3", "result": {"type": "canceled"}},
            {"stage": "canceled", "retryable": True, "status_code": None},
            id="canceled",
        ),
        pytest.param(
            {"custom_id": "q4", "result": {"type": "expired"}},
            {"stage": "expired", "retryable": True},
            id="expired",
        ),
        pytest.param(
            {"custom_id": "q5", "result": {"type": "exploded"}},
            {"stage": "parse", "error_code": "unknown_result_type"},
            id="unknown-result-type",
        ),
        pytest.param(
            {"custom_id": "q6"},
            {"stage": "parse", "error_code": "no_outcome"},
            id="no-response-result-or-error",
        ),
    ],
)
def test_anthropic_and_odd_items_become_errors_rows(item: dict, expected: dict) -> None:
    outcome = classify_item(item)
    assert not outcome.is_result
    assert {key: outcome.row[key] for key in expected} == expected


def test_anthropic_succeeded_item_uses_the_native_message() -> None:
    outcome = classify_item(
        {"custom_id": "q1", "result": {"type": "succeeded", "message": MESSAGE}}
    )
    assert outcome.is_result
    assert outcome.row["output_text"] == "Hi there"
    assert outcome.row["model"] == "claude-3-5-haiku-latest"
    assert outcome.row["status_code"] is None
    assert json.loads(outcome.row["body"]) == MESSAGE


@pytest.mark.parametrize(
    "body",
    [
        {"text": 'naïve 東京 \u2028 "quoted"\n', "n": 1.5e-7},
        {"big": 2**70, "small": -(2**65)},
        {"surrogate": "\ud800"},
        [1, 2, 3],
        "plain text body",
        None,
    ],
    ids=["unicode", "big-integers", "lone-surrogate", "list", "string", "null"],
)
def test_body_is_kept_losslessly(body: Any) -> None:
    text = dump_json(body)
    assert json.loads(text) == body
    text.decode("utf-8")  # must be storable as a Parquet UTF-8 string


def test_parse_json_falls_back_to_the_stdlib_for_what_orjson_refuses() -> None:
    assert parse_json(b'{"custom_id":"a","text":"\\ud800"}')["text"] == "\ud800"
    assert parse_json(b'{"custom_id":"a","x":NaN}')["custom_id"] == "a"
    with pytest.raises(ValueError):
        parse_json(b'{"custom_id": "a", ')
    with pytest.raises(ValueError):
        parse_json(b'{"custom_id": "\xff"}')


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"custom_id": "req-7", "response": {', "req-7"),
        (b'{"id":"x","custom_id":"with \\"quote\\"","respo', 'with "quote"'),
        ('{"custom_id":"caf\u00e9-1",', "caf\u00e9-1"),
        (b"garbage", None),
        (b'{"custom_id": 17}', None),
        (b'{"custom_id": ""}', None),
    ],
)
def test_recover_custom_id(raw: bytes | str, expected: str | None) -> None:
    assert recover_custom_id(raw) == expected


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (None, False),
        (400, False),
        (404, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (529, True),
    ],
)
def test_is_retryable_status(status: int | None, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (None, False),
        ("invalid_request_error", False),
        ("overloaded_error", True),
        ("Rate_Limit_Exceeded", True),
        ("503", True),
        ("400", False),
        ("8", True),
        ("5", False),
    ],
)
def test_is_retryable_code(code: str | None, retryable: bool) -> None:
    assert is_retryable_code(code) is retryable
