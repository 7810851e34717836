"""Structured output: the answer a template's response_format asks for, read out of a response
body, checked against the schema, and typed (one column per top-level property).

Supported schema words: type (string, integer, number, boolean, array, object, null, or a list
of them), enum, const, properties, required, additionalProperties (false), items, anyOf/oneOf.
Others are allowed and not checked. An answer that is not JSON, breaks the schema or is a
refusal becomes a `parse` error with the reason; a valid one is kept as compact JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

Check = Callable[[Any, str], str | None]  # (value, where) -> a problem, or None
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
# JSON schema type -> DuckDB type of the typed column (json_transform reads the answer with it)
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
}


class StructuredOutput:
    """The response_format of a template: `answer(body, output_text)` is (json text, problem)."""

    def __init__(self, name: str, schema: Mapping[str, Any]) -> None:
        self.name = name
        self.schema = dict(schema)
        self._check = _compile(self.schema)

    @classmethod
    def of_template(cls, template: Mapping[str, Any] | None) -> StructuredOutput | None:
        """The structured output a plan's template asks for, if any."""
        fmt = (template or {}).get("response_format")
        return cls(fmt["name"], fmt["schema"]) if fmt else None

    def answer(self, body: Any, output_text: str | None) -> tuple[str | None, str | None]:
        """The answer as compact JSON text and None, or None and why there is no valid one."""
        value, problem = self._extract(body, output_text)
        if problem is not None:
            return None, problem
        problem = self._check(value, "answer")
        if problem is not None:
            return None, f"schema violation: {problem}"
        return orjson.dumps(value).decode(), None

    def _extract(self, body: Any, text: str | None) -> tuple[Any, str | None]:
        refusal = _refusal(body)
        if refusal is not None:
            return None, f"refusal: {refusal}"
        tool_input = _tool_input(body, self.name)
        if tool_input is not None:
            return tool_input, None
        if text is None:
            return None, "no answer in the response"
        try:
            return orjson.loads(text), None
        except orjson.JSONDecodeError as exc:
            return None, f"not JSON: {exc}"

    def columns(self) -> list[str]:
        """The typed columns: one per top-level property of the schema."""
        return list(self.schema["properties"])

    def structure(self) -> dict[str, Any]:
        """The json_transform structure of the whole answer."""
        return {name: json_structure(sub) for name, sub in self.schema["properties"].items()}


def json_structure(schema: Mapping[str, Any]) -> Any:
    """The structure DuckDB's json_transform reads values of `schema` with: a type name, a list
    of one structure (arrays), or an object of them; JSON (its text) for enums of other than
    strings, unions and the untyped."""
    kinds = schema.get("type")
    if isinstance(kinds, list):
        real = [k for k in kinds if k != "null"]
        kinds = real[0] if len(real) == 1 else None
    if "enum" in schema or "const" in schema:
        return "VARCHAR" if kinds in (None, "string") else _DUCKDB_TYPES.get(kinds, "JSON")
    if kinds in _DUCKDB_TYPES:
        return _DUCKDB_TYPES[kinds]
    if kinds == "array" and isinstance(schema.get("items"), Mapping):
        return [json_structure(schema["items"])]
    if kinds == "object" and isinstance(schema.get("properties"), Mapping):
        return {name: json_structure(sub) for name, sub in schema["properties"].items()}
    return "JSON"


def _compile(schema: Any) -> Check:
    """A check of values against `schema` (the supported words; others pass)."""
    if not isinstance(schema, Mapping):
        return lambda value, where: None
    checks: list[Check] = []
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        tests = [_JSON_TYPES[k] for k in allowed if k in _JSON_TYPES]

        def type_check(value: Any, where: str) -> str | None:
            if any(test(value) for test in tests):
                return None
            return f"{where} should be {' or '.join(allowed)}, not {_kind(value)}"

        checks.append(type_check)
    if "enum" in schema or "const" in schema:
        options = list(schema["enum"]) if "enum" in schema else [schema["const"]]

        def enum_check(value: Any, where: str) -> str | None:
            return None if value in options else f"{where} {value!r} is not one of {options}"

        checks.append(enum_check)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        subs = {name: _compile(sub) for name, sub in properties.items()}
        required = list(schema.get("required") or [])
        closed = schema.get("additionalProperties") is False

        def object_check(value: Any, where: str) -> str | None:
            if not isinstance(value, dict):
                return None  # the type check says so
            missing = [name for name in required if name not in value]
            if missing:
                return f"{where} lacks {missing[0]!r}"
            if closed:
                extra = [name for name in value if name not in subs]
                if extra:
                    return f"{where} has {extra[0]!r}, which the schema does not allow"
            for name, check in subs.items():
                if name in value:
                    problem = check(value[name], f"{where}.{name}")
                    if problem:
                        return problem
            return None

        checks.append(object_check)
    if isinstance(schema.get("items"), Mapping):
        item = _compile(schema["items"])

        def array_check(value: Any, where: str) -> str | None:
            if not isinstance(value, list):
                return None
            for n, element in enumerate(value):
                problem = item(element, f"{where}[{n}]")
                if problem:
                    return problem
            return None

        checks.append(array_check)
    for word in ("anyOf", "oneOf"):
        if isinstance(schema.get(word), list):
            options_checks = [_compile(option) for option in schema[word]]

            def union_check(
                value: Any, where: str, choices: list[Check] = options_checks
            ) -> str | None:
                if any(choice(value, where) is None for choice in choices):
                    return None
                return f"{where} matches none of the schema's choices"

            checks.append(union_check)

    def check(value: Any, where: str) -> str | None:
        for one in checks:
            problem = one(value, where)
            if problem:
                return problem
        return None

    return check


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _JSON_TYPES[name](value):
            return name
    return type(value).__name__


def _refusal(body: Any) -> str | None:
    """The model's refusal, in the chat completions, Responses or Messages API form."""
    if not isinstance(body, dict):
        return None
    if body.get("stop_reason") == "refusal":
        texts = [b.get("text") for b in body.get("content") or () if isinstance(b, dict)]
        return " ".join(t for t in texts if isinstance(t, str)) or "refused"
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("refusal"), str):
            return message["refusal"]
    for item in body.get("output") or ():
        for part in (item.get("content") or ()) if isinstance(item, dict) else ():
            if isinstance(part, dict) and part.get("type") == "refusal":
                return str(part.get("refusal") or "refused")
    return None


def _tool_input(body: Any, name: str) -> Any:
    """The input of the Messages API tool call that carries the answer (Anthropic)."""
    if not isinstance(body, dict):
        return None
    for block in body.get("content") or ():
        if (
            isinstance(block, dict)
            and block.get("type") == "tool_use"
            and block.get("name") == name
        ):
            return block.get("input")
    return None
