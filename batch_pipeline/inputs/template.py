"""Request templates: one table row -> one batch request line (DESIGN.md "Request template").

A template names a model and an endpoint, the key column(s) that identify a row, and Jinja2 text
(sandboxed; an undefined name is an error) for the prompt, the messages or the embeddings input.
`response_format` asks for structured output: OpenAI's json_schema form on chat completions and
the Responses API; for Anthropic's Messages API, which has no such field, a tool whose input is
the schema with tool_choice forcing it (what Bifrost's own converters do), the tool's input then
being the answer. `params` are merged into every request body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from jinja2 import StrictUndefined, meta, nodes
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.providers import BATCH_ENDPOINTS, PROVIDERS, split_model

EMBEDDINGS, MESSAGES, RESPONSES, COMPLETIONS = (
    "/v1/embeddings",
    "/v1/messages",
    "/v1/responses",
    "/v1/completions",
)
# A template's answer comes as a tool call on the Messages API; this is the tool's name.
DEFAULT_SCHEMA_NAME = "answer"
# The longest custom_id every provider accepts (Anthropic: 64, [A-Za-z0-9_-]).
CUSTOM_ID_HASH_CHARS = 24


class TemplateError(BatchPipelineError):
    """A template that cannot be used: the message names the field (or file) and why."""


class Message(BaseModel):
    """One templated chat message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ResponseFormat(BaseModel):
    """A JSON schema the answer must follow (OpenAI's json_schema form)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = DEFAULT_SCHEMA_NAME
    schema_: dict[str, Any] = Field(alias="schema")
    # OpenAI's strict mode wants every property required and additionalProperties false at
    # every level; answers are validated here either way.
    strict: bool = False
    description: str | None = None

    @field_validator("schema_")
    @classmethod
    def _an_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object" or not isinstance(value.get("properties"), dict):
            raise ValueError("the schema must be an object with properties")
        return value


class RequestTemplate(BaseModel):
    """How each row of a table becomes one request."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    model: str = Field(description="provider/model, e.g. openai/gpt-4o-mini")
    endpoint: str = Field(default="/v1/chat/completions", description="the batch endpoint")
    key: str | list[str] = Field(description="column(s) naming a row; unique, kept in outputs")
    system: str | None = Field(default=None, description="system text (Jinja2)")
    prompt: str | None = Field(default=None, description="the user message (Jinja2)")
    messages: list[Message] | None = Field(default=None, description="instead of prompt")
    input: str | None = Field(default=None, description="embeddings: the text to embed (Jinja2)")
    response_format: ResponseFormat | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="merged into every body")
    passthrough: list[str] = Field(
        default_factory=list, description="source columns copied to results and errors"
    )

    @field_validator("model")
    @classmethod
    def _provider_model(cls, value: str) -> str:
        parts = split_model(value)
        if parts is None or parts[0] not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise ValueError(f"{value!r}: name the model as provider/model ({known})")
        return value

    @field_validator("endpoint")
    @classmethod
    def _known_endpoint(cls, value: str) -> str:
        if value not in BATCH_ENDPOINTS:
            raise ValueError(f"{value!r}: one of {', '.join(BATCH_ENDPOINTS)}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> RequestTemplate:
        if not self.keys or any(not k for k in self.keys) or len(set(self.keys)) < len(self.keys):
            raise ValueError("key: name one column, or a list of distinct columns")
        texts = {"prompt": self.prompt, "messages": self.messages, "input": self.input}
        given = [name for name, value in texts.items() if value]
        if self.endpoint == EMBEDDINGS:
            if given != ["input"]:
                raise ValueError("an embeddings template gives `input` (and no prompt or messages)")
            if self.system or self.response_format:
                raise ValueError("an embeddings template has no system text or response_format")
        elif len(given) != 1 or given == ["input"]:
            raise ValueError("give `prompt` or `messages` (one of them)")
        if self.endpoint == COMPLETIONS and (self.messages or self.system or self.response_format):
            raise ValueError("/v1/completions takes a `prompt` only")
        if self.provider != "anthropic" and self.endpoint == MESSAGES:
            raise ValueError("/v1/messages is Anthropic's endpoint")
        if self.provider == "anthropic" and self.endpoint != MESSAGES:
            raise ValueError("Anthropic batches serve /v1/messages only")
        if self.endpoint == MESSAGES and "max_tokens" not in self.params:
            raise ValueError("the Messages API needs params.max_tokens")
        return self

    @cached_property
    def keys(self) -> list[str]:
        """The key column(s), as a list."""
        return [self.key] if isinstance(self.key, str) else list(self.key)

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    def fingerprint(self) -> str:
        """A digest of everything that shapes the requests (part of an input's identity)."""
        dumped = self.model_dump(mode="json", by_alias=True)
        return hashlib.sha256(orjson.dumps(dumped, option=orjson.OPT_SORT_KEYS)).hexdigest()

    @cached_property
    def _compiled(self) -> dict[str, Any]:
        """Each Jinja2 text compiled once, by the name of the field it came from."""
        environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        texts = {"system": self.system, "prompt": self.prompt, "input": self.input}
        for n, message in enumerate(self.messages or []):
            texts[f"messages[{n}]"] = message.content
        compiled = {}
        for name, text in texts.items():
            if text is None:
                continue
            try:
                compiled[name] = (environment.from_string(text), environment.parse(text))
            except JinjaError as exc:
                lineno = getattr(exc, "lineno", None)
                where = f" (line {lineno})" if lineno else ""
                raise TemplateError(f"{name}{where}: {_one_line(exc)}") from None
        return compiled

    @cached_property
    def _renderers(self) -> dict[str, Callable[[Mapping[str, Any]], str]]:
        """Per text, a function of a row: the text rendered."""
        return {
            name: _renderer(template, parsed) for name, (template, parsed) in self._compiled.items()
        }

    def columns(self) -> list[str]:
        """Every source column the template reads: the keys, the Jinja2 names, the passthrough."""
        return list(dict.fromkeys([*self.required(), *self.passthrough]))

    def required(self) -> list[str]:
        """The columns a row must have a value in: the keys and the names the texts use."""
        named: list[str] = []
        for _, parsed in self._compiled.values():
            named += sorted(meta.find_undeclared_variables(parsed))
        return list(dict.fromkeys([*self.keys, *named]))

    def check_columns(self, available: list[str], where: str) -> None:
        """Refuse, in one line, a template that names a column the source does not have."""
        self._compiled  # noqa: B018 - a syntax error is reported first
        missing = [c for c in self.columns() if c not in available]
        if missing:
            shown = ", ".join(repr(c) for c in missing)
            raise TemplateError(
                f"{where}: the template names column(s) {shown} that the table does not have "
                f"(it has: {', '.join(available[:20])}{', ...' if len(available) > 20 else ''})"
            )

    def render(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The request body for one row (with `provider/model`); ValueError says why a row
        cannot be rendered (a null the template reads, a template error)."""
        texts = {}
        for name, render in self._renderers.items():
            try:
                texts[name] = render(row)
            except JinjaError as exc:
                raise ValueError(f"{name}: {_one_line(exc)}") from None
            except KeyError as exc:
                raise ValueError(f"{name}: {exc.args[0]!r} is undefined") from None
        body: dict[str, Any] = {"model": self.model}
        if self.endpoint == EMBEDDINGS:
            body["input"] = texts["input"]
        elif self.endpoint == COMPLETIONS:
            body["prompt"] = texts["prompt"]
        elif self.endpoint == RESPONSES:
            if "system" in texts:
                body["instructions"] = texts["system"]
            body["input"] = texts["prompt"] if self.prompt else self._messages(texts)
        elif self.endpoint == MESSAGES:
            if "system" in texts:
                body["system"] = texts["system"]
            body["messages"] = self._messages(texts)
        else:
            body["messages"] = [
                *([{"role": "system", "content": texts["system"]}] if "system" in texts else []),
                *self._messages(texts),
            ]
        body.update(self._fixed)
        return body

    @cached_property
    def _fixed(self) -> dict[str, Any]:
        """The body fields every row shares: the params, and the response_format's fields."""
        return {**self.params, **(self._structured() if self.response_format else {})}

    def _messages(self, texts: dict[str, str]) -> list[dict[str, str]]:
        if self.prompt is not None:
            return [{"role": "user", "content": texts["prompt"]}]
        return [
            {"role": m.role, "content": texts[f"messages[{n}]"]}
            for n, m in enumerate(self.messages or [])
        ]

    def _structured(self) -> dict[str, Any]:
        """The body fields that ask for the response_format, in the endpoint's own form."""
        fmt = self.response_format
        assert fmt is not None
        if self.endpoint == MESSAGES:
            tool = {"name": fmt.name, "input_schema": fmt.schema_}
            if fmt.description:
                tool["description"] = fmt.description
            return {"tools": [tool], "tool_choice": {"type": "tool", "name": fmt.name}}
        schema = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict}
        if fmt.description:
            schema["description"] = fmt.description
        if self.endpoint == RESPONSES:
            return {"text": {"format": {"type": "json_schema", **schema}}}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}

    def line(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The batch line of one request, in the form its provider's batches take."""
        if self.endpoint == MESSAGES:
            return {"custom_id": custom_id, "params": body}
        return {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}


def _renderer(template: Any, parsed: Any) -> Callable[[Mapping[str, Any]], str]:
    """A fast `template.render(row)`, the same text. A text that names no column is rendered
    once; one that only interpolates columns (`Hi {{ name }}`, the usual prompt) is joined
    from its parts, as Jinja2's compiled code does (`str` of each value); anything else runs
    the compiled template with a context made of the row and the globals copied once (Jinja2's
    own `render` copies them for every call, most of a row's cost)."""
    if not meta.find_undeclared_variables(parsed):
        text: str = template.render()
        return lambda row: text
    parts = _interpolation(parsed)
    if parts is not None:
        return lambda row: "".join([part if literal else str(row[part]) for literal, part in parts])
    environment, shared = template.environment, dict(template.globals)
    context, concat, root = environment.context_class, environment.concat, template.root_render_func
    name, blocks = template.name, template.blocks

    def render(row: Mapping[str, Any]) -> str:
        rendered: str = concat(root(context(environment, {**shared, **row}, name, blocks)))
        return rendered

    return render


def _interpolation(parsed: Any) -> list[tuple[bool, str]] | None:
    """(is literal, text or column) parts of a template made only of text and `{{ column }}`;
    None for anything else (filters, attributes, statements)."""
    parts: list[tuple[bool, str]] = []
    for node in parsed.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append((True, child.data))
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                parts.append((False, child.name))
            else:
                return None
    return parts


def custom_id_of(key: tuple[Any, ...]) -> str:
    """A custom_id every provider accepts, the same for the same key values wherever they are:
    `k` and a hash of the key (keys may be long, unicode, or several columns)."""
    text = orjson.dumps(list(key), default=str, option=orjson.OPT_SORT_KEYS)
    return "k" + hashlib.sha256(text).hexdigest()[:CUSTOM_ID_HASH_CHARS]


def load_template(
    source: Path | str | Mapping[str, Any], where: str | None = None
) -> RequestTemplate:
    """A template from a YAML file (or its text, or a mapping); TemplateError in one line."""
    shown = where or (str(source) if isinstance(source, Path) else "template")
    try:
        data = (
            yaml.safe_load(source.read_text())
            if isinstance(source, Path)
            else yaml.safe_load(source)
            if isinstance(source, str)
            else dict(source)
        )
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{shown}: cannot read the template: {_one_line(exc)}") from None
    if not isinstance(data, dict):
        raise TemplateError(
            f"{shown}: a template is a mapping of model, endpoint, key, prompt, ..."
        )
    try:
        template = RequestTemplate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "template"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise TemplateError(f"{shown}: {field}: {message}") from None
    try:
        template._compiled  # noqa: B018 - syntax errors now, before anything is read or paid for
    except TemplateError as exc:
        raise TemplateError(f"{shown}: {exc}") from None
    return template


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
