"""Request templates: what a YAML template may say, the one-line refusals, and the request body
each endpoint gets from a row."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.inputs.template import (
    RequestTemplate,
    TemplateError,
    custom_id_of,
    load_template,
)
from batch_pipeline.providers import PROVIDERS

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


def make(**fields: Any) -> RequestTemplate:
    base: dict[str, Any] = {"model": "openai/gpt-4o-mini", "key": "id", "prompt": "{{ text }}"}
    return load_template({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "gpt-4o-mini"}, "model: 'gpt-4o-mini': name the model as provider/model"),
        ({"endpoint": "/v1/images"}, "endpoint: '/v1/images': one of"),
        ({"key": []}, "key: name one column, or a list of distinct columns"),
        ({"key": ["a", "a"]}, "key: name one column, or a list of distinct columns"),
        ({"prompt": None}, "give `prompt` or `messages` (one of them)"),
        ({"messages": [{"role": "user", "content": "x"}]}, "give `prompt` or `messages`"),
        ({"endpoint": "/v1/embeddings"}, "an embeddings template gives `input`"),
        ({"endpoint": "/v1/messages"}, "/v1/messages is Anthropic's endpoint"),
        ({"model": "anthropic/claude-3-5-haiku-latest"}, "Anthropic batches serve /v1/messages"),
        (
            {"model": "anthropic/claude-3-5-haiku-latest", "endpoint": "/v1/messages"},
            "the Messages API needs params.max_tokens",
        ),
        ({"endpoint": "/v1/completions", "system": "s"}, "/v1/completions takes a `prompt` only"),
        ({"response_format": {"schema": {"type": "string"}}}, "an object with properties"),
        ({"temperature": 0}, "temperature: Extra inputs are not permitted"),
        ({"prompt": "{{ text "}, "prompt (line 1): unexpected end of template"),
        ({"system": "ok\n{% if %}"}, "system (line 2): "),
    ],
)
def test_a_bad_template_is_refused_in_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError) as refused:
        make(**fields)
    text = str(refused.value)
    assert text.startswith("template: ") and message in text and "\n" not in text


def test_a_template_file_that_is_not_a_mapping_or_not_yaml(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- model\n")
    with pytest.raises(TemplateError, match=r"list.yaml: a template is a mapping"):
        load_template(listed)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [\n")
    with pytest.raises(TemplateError, match=r"broken.yaml: cannot read the template"):
        load_template(broken)
    with pytest.raises(TemplateError, match=r"missing.yaml: cannot read the template"):
        load_template(tmp_path / "missing.yaml")


def test_columns_the_template_reads_and_a_missing_one() -> None:
    spec = make(
        key=["shop", "sku"],
        system="You help {{ shop }}.",
        prompt="{% for t in tags %}{{ t }}{% endfor %} {{ text | upper }}",
        passthrough=["price"],
    )
    assert spec.required() == ["shop", "sku", "tags", "text"]
    assert spec.columns() == ["shop", "sku", "tags", "text", "price"]
    spec.check_columns(["shop", "sku", "tags", "text", "price", "other"], "t.parquet")
    with pytest.raises(TemplateError) as refused:
        spec.check_columns(["shop", "sku", "text"], "t.parquet")
    assert str(refused.value) == (
        "t.parquet: the template names column(s) 'tags', 'price' that the table does not have "
        "(it has: shop, sku, text)"
    )


def test_values_are_data_never_template_code() -> None:
    spec = make(prompt="Say: {{ text }}")
    body = spec.render({"id": 1, "text": "{{ 7 * 7 }} {% raw %}"})
    assert body["messages"] == [{"role": "user", "content": "Say: {{ 7 * 7 }} {% raw %}"}]


def test_the_sandbox_and_undefined_names() -> None:
    escape = make(prompt="{{ text.__class__.__mro__ }}")
    with pytest.raises(ValueError, match=r"prompt: .*unsafe"):
        escape.render({"id": 1, "text": "x"})
    nested = make(prompt="{{ text.missing }}")
    with pytest.raises(ValueError, match=r"prompt: .*has no attribute 'missing'"):
        nested.render({"id": 1, "text": "x"})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"system": "Be brief."},
            {
                "model": "openai/gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                ],
                "temperature": 0,
            },
        ),
        (
            {"endpoint": "/v1/responses", "system": "Be brief."},
            {
                "model": "openai/gpt-4o-mini",
                "instructions": "Be brief.",
                "input": "hi",
                "temperature": 0,
            },
        ),
        (
            {"endpoint": "/v1/completions"},
            {"model": "openai/gpt-4o-mini", "prompt": "hi", "temperature": 0},
        ),
        (
            {"endpoint": "/v1/embeddings", "prompt": None, "input": "{{ text }}", "params": {}},
            {"model": "openai/gpt-4o-mini", "input": "hi"},
        ),
        (
            {
                "model": "anthropic/claude-3-5-haiku-latest",
                "endpoint": "/v1/messages",
                "system": "Be brief.",
                "params": {"max_tokens": 50},
            },
            {
                "model": "anthropic/claude-3-5-haiku-latest",
                "system": "Be brief.",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 50,
            },
        ),
        (
            {
                "prompt": None,
                "messages": [
                    {"role": "developer", "content": "Rules for {{ id }}"},
                    {"role": "user", "content": "{{ text }}"},
                ],
            },
            {
                "model": "openai/gpt-4o-mini",
                "messages": [
                    {"role": "developer", "content": "Rules for 7"},
                    {"role": "user", "content": "hi"},
                ],
                "temperature": 0,
            },
        ),
    ],
    ids=["chat", "responses", "completions", "embeddings", "messages", "messages-list"],
)
def test_the_body_of_each_endpoint(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = make(**{"params": {"temperature": 0}, **fields})
    assert spec.render({"id": 7, "text": "hi"}) == expected


@pytest.mark.parametrize(
    ("fields", "structured"),
    [
        (
            {},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "label", "schema": SCHEMA, "strict": False},
                }
            },
        ),
        (
            {"endpoint": "/v1/responses"},
            {
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "label",
                        "schema": SCHEMA,
                        "strict": False,
                    }
                }
            },
        ),
        (
            {
                "model": "anthropic/claude-3-5-haiku-latest",
                "endpoint": "/v1/messages",
                "params": {"max_tokens": 50},
            },
            {
                "tools": [{"name": "label", "input_schema": SCHEMA}],
                "tool_choice": {"type": "tool", "name": "label"},
            },
        ),
    ],
    ids=["chat", "responses", "anthropic-tool"],
)
def test_structured_output_in_each_endpoints_own_form(
    fields: dict[str, Any], structured: dict[str, Any]
) -> None:
    spec = make(response_format={"name": "label", "schema": SCHEMA}, **fields)
    body = spec.render({"id": 1, "text": "hi"})
    assert {k: body[k] for k in structured} == structured


def test_lines_in_each_providers_batch_form() -> None:
    chat = make()
    assert chat.line("k1", {"model": "m"}) == {
        "custom_id": "k1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m"},
    }
    claude = make(
        model="anthropic/claude-3-5-haiku-latest",
        endpoint="/v1/messages",
        params={"max_tokens": 5},
    )
    assert claude.line("k1", {"model": "m"}) == {"custom_id": "k1", "params": {"model": "m"}}


@pytest.mark.parametrize(
    "key",
    [(1,), ("a" * 10_000,), ("東京", 3), (None,), (1.5, True), ("x/y z",)],
)
def test_custom_ids_are_stable_short_and_valid_for_every_provider(key: tuple[Any, ...]) -> None:
    custom_id = custom_id_of(key)
    assert custom_id == custom_id_of(key)
    assert re.fullmatch(r"k[0-9a-f]{24}", custom_id)
    assert all(p.custom_id_allowed(custom_id) for p in PROVIDERS.values())


def test_custom_ids_differ_by_key_and_fingerprints_by_template() -> None:
    assert custom_id_of((1, 2)) != custom_id_of((2, 1))
    assert custom_id_of(("1",)) != custom_id_of((1,))
    assert make().fingerprint() == make().fingerprint()
    assert make().fingerprint() != make(prompt="{{ text }}!").fingerprint()


@pytest.mark.parametrize(
    "text",
    [
        "Product: {{ product }}\nReview: {{ review }}\n",
        "{{ product }}{{ review }}",
        "plain {{ review }} text with } and { braces",
        "{{ product | upper }}: {{ review }}",
        "{% if stars > 3 %}good{% else %}bad{% endif %} {{ review }}",
        "{{ tags[0] }} {{ meta.kind }} {{ stars }} {{ price }}",
    ],
    ids=["interpolation", "adjacent", "braces", "filter", "statement", "items"],
)
@pytest.mark.parametrize(
    "row",
    [
        {"product": "lamp", "review": "ok", "stars": 4, "price": 1.0},
        {"product": "日本語 🚀", "review": "{{ x }}", "stars": 1, "price": 1e20},
        {"product": 7, "review": "", "stars": 5, "price": -0.0},
    ],
)
def test_every_way_of_rendering_gives_jinjas_own_text(text: str, row: dict[str, Any]) -> None:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    row = {**row, "tags": ["t1", "t2"], "meta": {"kind": "k"}}
    spec = make(prompt=text)
    expected = SandboxedEnvironment(undefined=jinja2.StrictUndefined).from_string(text).render(row)
    assert spec.render({"id": 1, **row})["messages"][0]["content"] == expected


def test_a_row_without_a_column_the_template_names() -> None:
    for text in ("{{ text }}", "{{ text | upper }}"):
        with pytest.raises(ValueError, match=r"prompt: 'text' is undefined"):
            make(prompt=text).render({"id": 1})
