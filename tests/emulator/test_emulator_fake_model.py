"""The fake model: real API shapes, deterministic text, max_tokens, usage, embeddings, failures."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import pytest

from batch_pipeline.emulator.fake_model import RequestFailure, count_tokens, reply_words, respond

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Classify: I love it"}]}


def _respond(endpoint: str, body: dict, **kwargs) -> dict:
    return respond(endpoint, body, seed_key="k", created=1, **kwargs)


def test_text_is_a_function_of_model_and_prompt() -> None:
    one = _respond("/v1/chat/completions", CHAT)
    again = respond("/v1/chat/completions", CHAT, seed_key="other", created=2)
    other = _respond(
        "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x"}]}
    )
    text = one["choices"][0]["message"]["content"]
    assert (
        text
        == again["choices"][0]["message"]["content"]
        != other["choices"][0]["message"]["content"]
    )
    assert text.endswith(".") and one["usage"]["completion_tokens"] == count_tokens(text)


@pytest.mark.parametrize(
    ("endpoint", "body", "path_to_reason", "reason"),
    [
        (
            "/v1/chat/completions",
            {**CHAT, "max_tokens": 3},
            ("choices", 0, "finish_reason"),
            "length",
        ),
        (
            "/v1/chat/completions",
            {**CHAT, "max_completion_tokens": 3},
            ("choices", 0, "finish_reason"),
            "length",
        ),
        (
            "/v1/completions",
            {"model": "m", "prompt": "p", "max_tokens": 3},
            ("choices", 0, "finish_reason"),
            "length",
        ),
        (
            "/v1/messages",
            {"model": "c", "max_tokens": 3, "messages": [{"role": "user", "content": "p"}]},
            ("stop_reason",),
            "max_tokens",
        ),
    ],
)
def test_max_tokens_respected(
    endpoint: str, body: dict, path_to_reason: tuple, reason: str
) -> None:
    value = _respond(endpoint, body)
    for key in path_to_reason:
        value = value[key]
    assert value == reason


def test_shapes_of_each_endpoint() -> None:
    completion = _respond("/v1/completions", {"model": "m", "prompt": ["a", "b"]})
    assert completion["object"] == "text_completion" and [
        c["index"] for c in completion["choices"]
    ] == [0, 1]
    response = _respond(
        "/v1/responses", {"model": "m", "input": [{"role": "user", "content": "hi"}]}
    )
    assert (
        response["object"] == "response"
        and response["output"][0]["content"][0]["type"] == "output_text"
    )
    assert (
        response["usage"]["total_tokens"]
        == response["usage"]["input_tokens"] + response["usage"]["output_tokens"]
    )
    message = _respond(
        "/v1/messages",
        {
            "model": "c",
            "max_tokens": 100,
            "system": "s",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        },
    )
    assert message["id"].startswith("msg_01") and message["stop_reason"] == "end_turn"
    assert message["content"][0]["text"]
    chat = _respond("/v1/chat/completions", {**CHAT, "n": 2})
    assert len(chat["choices"]) == 2


def test_responses_stop_at_max_output_tokens() -> None:
    prompt = next(p for p in map(str, range(100)) if len(reply_words("m", p)) + 1 > 16)
    response = _respond("/v1/responses", {"model": "m", "input": prompt, "max_output_tokens": 16})
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"]["output_tokens"] == 16


@pytest.mark.parametrize(("dimensions", "expected"), [(None, 1536), (16, 16)])
def test_embeddings_are_stable_unit_vectors(dimensions: int | None, expected: int) -> None:
    body = {"model": "text-embedding-3-small", "input": ["alpha", "beta"]}
    if dimensions:
        body["dimensions"] = dimensions
    result = _respond("/v1/embeddings", body)
    vectors = [item["embedding"] for item in result["data"]]
    assert [len(v) for v in vectors] == [expected, expected] and vectors[0] != vectors[1]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-9) for v in vectors)
    assert _respond("/v1/embeddings", body)["data"][0]["embedding"] == vectors[0]
    encoded = _respond("/v1/embeddings", {**body, "encoding_format": "base64"})["data"][0][
        "embedding"
    ]
    decoded = struct.unpack(f"<{expected}f", base64.b64decode(encoded))
    assert math.isclose(decoded[0], vectors[0][0], rel_tol=1e-6)


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (400, "invalid_request_error", None),
        (404, "invalid_request_error", "model_not_found"),
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", "server_error"),
        (503, "server_error", "server_error"),
    ],
)
def test_fail_marker(status: int, type_: str, code: str | None) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": f"x [[fail:{status}]] y"}]}
    with pytest.raises(RequestFailure) as caught:
        _respond("/v1/chat/completions", body)
    error = caught.value.openai_body()["error"]
    assert (caught.value.status, error["type"], error["code"]) == (status, type_, code)


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}]},
            "you must provide a model parameter",
        ),
        ("/v1/chat/completions", {"model": "m"}, "Missing required parameter: 'messages'."),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, "integer below minimum value"),
        (
            "/v1/embeddings",
            {"model": "m", "input": "x", "encoding_format": "hex"},
            "encoding_format",
        ),
        (
            "/v1/responses",
            {"model": "m", "input": "x", "max_output_tokens": 5},
            "Expected a value >= 16",
        ),
        ("/v1/messages", {"model": "c", "messages": []}, "max_tokens: Field required"),
    ],
)
def test_invalid_parameters_are_400(endpoint: str, body: dict, message: str) -> None:
    with pytest.raises(RequestFailure) as caught:
        _respond(endpoint, body)
    assert caught.value.status == 400 and message in caught.value.message


def test_error_rate_is_seeded() -> None:
    def failures(seed: int) -> list[int]:
        failed = []
        for index in range(200):
            try:
                respond(
                    "/v1/chat/completions",
                    CHAT,
                    seed_key=f"k{index}",
                    created=1,
                    error_rate=0.25,
                    seed=seed,
                )
            except RequestFailure as failure:
                assert failure.status == 500
                failed.append(index)
        return failed

    assert failures(7) == failures(7) != failures(8)
    assert 20 < len(failures(7)) < 80


def test_direct_endpoints_over_http(http: httpx.Client) -> None:
    chat = http.post("/v1/chat/completions", json={**CHAT, "model": "openai/gpt-4o-mini"}).json()
    assert chat["object"] == "chat.completion" and chat["model"] == "gpt-4o-mini"
    assert (
        chat["extra_fields"]["provider"] == "openai"
        and chat["extra_fields"]["request_type"] == "chat_completion"
    )
    message = http.post(
        "/v1/messages",
        json={
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert (
        message.json()["type"] == "message"
        and message.json()["extra_fields"]["provider"] == "anthropic"
    )
    failed = http.post(
        "/v1/embeddings", json={"model": "openai/text-embedding-3-small", "input": "[[fail:429]]"}
    )
    assert failed.status_code == 429 and failed.json()["error"]["code"] == "rate_limit_exceeded"
