"""Structured answers: read out of each API's response body, checked against the schema, and
the DuckDB structure that types them."""

from __future__ import annotations

from typing import Any

import pytest

from batch_pipeline.results.structured import StructuredOutput, json_structure

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["a", "b"]},
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "inner": {
            "type": "object",
            "properties": {"x": {"type": ["number", "null"]}},
            "additionalProperties": False,
        },
        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    },
    "required": ["label", "n"],
}
ANSWER = StructuredOutput("answer", SCHEMA)


def chat(text: str | None, refusal: str | None = None) -> dict[str, Any]:
    return {"choices": [{"message": {"content": text, "refusal": refusal}}]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"label": "a", "n": 3}', ('{"label":"a","n":3}', None)),
        ('{"label": "b", "n": 2.0, "tags": ["x"]}', ('{"label":"b","n":2.0,"tags":["x"]}', None)),
        ('{"label": "a", "n": 1, "inner": {"x": null}, "either": 4}', (..., None)),
        ("Sure! {", (None, "not JSON: ")),
        ('{"label": "c", "n": 1}', (None, "schema violation: answer.label 'c' is not one of")),
        ('{"label": "a"}', (None, "schema violation: answer lacks 'n'")),
        (
            '{"label": "a", "n": "3"}',
            (None, "schema violation: answer.n should be integer, not string"),
        ),
        (
            '{"label": "a", "n": 1, "tags": [1]}',
            (None, "schema violation: answer.tags[0] should be string"),
        ),
        (
            '{"label": "a", "n": 1, "inner": {"y": 1}}',
            (None, "schema violation: answer.inner has 'y', which"),
        ),
        (
            '{"label": "a", "n": 1, "either": []}',
            (None, "schema violation: answer.either matches none"),
        ),
        ('["label"]', (None, "schema violation: answer should be object, not array")),
    ],
)
def test_chat_answers(text: str, expected: tuple[Any, str | None]) -> None:
    answer, problem = ANSWER.answer(chat(text), text)
    want_answer, want_problem = expected
    if want_problem is None:
        assert problem is None
        if want_answer is not ...:
            assert answer == want_answer
    else:
        assert answer is None and problem is not None and problem.startswith(want_problem)


@pytest.mark.parametrize(
    "body",
    [
        chat(None, refusal="I can't help with that."),
        {
            "stop_reason": "refusal",
            "content": [{"type": "text", "text": "I can't help with that."}],
        },
        {"output": [{"content": [{"type": "refusal", "refusal": "I can't help with that."}]}]},
    ],
    ids=["chat", "messages", "responses"],
)
def test_refusals_in_every_api_form(body: dict[str, Any]) -> None:
    assert ANSWER.answer(body, None) == (None, "refusal: I can't help with that.")


def test_the_anthropic_tool_call_is_the_answer() -> None:
    body = {
        "content": [
            {"type": "text", "text": "Calling the tool."},
            {"type": "tool_use", "name": "answer", "input": {"label": "b", "n": 5}},
        ]
    }
    assert ANSWER.answer(body, "Calling the tool.") == ('{"label":"b","n":5}', None)
    wrong = {"content": [{"type": "tool_use", "name": "answer", "input": {"label": "b"}}]}
    assert ANSWER.answer(wrong, None) == (None, "schema violation: answer lacks 'n'")
    assert ANSWER.answer({"content": []}, None) == (None, "no answer in the response")


@pytest.mark.parametrize(
    ("schema", "structure"),
    [
        ({"type": "string"}, "VARCHAR"),
        ({"type": "integer"}, "BIGINT"),
        ({"type": "number"}, "DOUBLE"),
        ({"type": "boolean"}, "BOOLEAN"),
        ({"type": ["integer", "null"]}, "BIGINT"),
        ({"type": "string", "enum": ["a"]}, "VARCHAR"),
        ({"enum": ["a", 1]}, "VARCHAR"),
        ({"type": "integer", "enum": [1, 2]}, "BIGINT"),
        ({"type": "array", "items": {"type": "number"}}, ["DOUBLE"]),
        ({"type": "object", "properties": {"a": {"type": "boolean"}}}, {"a": "BOOLEAN"}),
        ({"type": ["string", "integer"]}, "JSON"),
        ({"anyOf": [{"type": "string"}]}, "JSON"),
        ({"type": "object"}, "JSON"),
    ],
)
def test_json_structure(schema: dict[str, Any], structure: Any) -> None:
    assert json_structure(schema) == structure
