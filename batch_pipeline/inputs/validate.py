"""Per-line rules: parse one raw line, check every field, and normalize it for its provider.

A line either becomes a `Request` (the exact bytes to send upstream and its target) or a list of
`(field, reason)` problems. All problems of a line are collected, not just the first.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import orjson

from batch_pipeline.inputs.models import ShardLimits
from batch_pipeline.inputs.native import Converter, converter
from batch_pipeline.providers import BATCH_ENDPOINTS, PROVIDERS, ProviderTraits, split_model

MESSAGES_ENDPOINT = "/v1/messages"
JSON_MAX_DEPTH = 1024  # orjson's nesting limit when reading
JSON_MAX_WRITE_DEPTH = 254  # ... and when writing the normalized line
_ENDPOINT_LIST = ", ".join(BATCH_ENDPOINTS)
_KNOWN_KEYS = frozenset({"custom_id", "method", "url", "body", "params"})
_MODEL_CACHE_SIZE = 1024
_BIG_INT = 1 << 64

FieldProblem = tuple[str | None, str]


class Route(NamedTuple):
    """Where the requests of one model string go, learned from the first valid line using it.

    `shrink` is how many bytes normalization removes (the model's provider prefix): a line whose
    payload is exactly that much shorter than the raw line is canonical, so orjson's reading of
    it cannot have hidden a duplicate key or a rounded big integer.
    """

    key: tuple[str, str, str]  # (provider, bare model, endpoint): one shard group
    bare: str
    openai_line: bool  # written as {custom_id, method, url, body}, else {custom_id, params}
    custom_id_re: re.Pattern[str] | None
    max_request_bytes: int
    shrink: int
    native: Converter | None  # the provider takes its model's native body (inputs/native.py)


# A valid line: (custom_id, its route, the normalized JSON to send). A plain tuple: it is made
# once per line on the hot path.
Request = tuple[str, Route, bytes]


class Target(NamedTuple):
    """What a body.model string resolves to."""

    provider: str
    model: str
    traits: ProviderTraits
    limits: ShardLimits
    custom_id_re: re.Pattern[str] | None


def _normalized(custom_id: str, route: Route, body: dict) -> dict:
    """The line as the provider's batch format wants it (body.model already bare)."""
    if route.openai_line:
        return {"custom_id": custom_id, "method": "POST", "url": route.key[2], "body": body}
    return {"custom_id": custom_id, "params": body}


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_error_reason(raw: bytes, exc: orjson.JSONDecodeError, unterminated: bool) -> str:
    """A plain reason for a line orjson refused (raw is known to be valid UTF-8)."""
    column = exc.colno
    message = exc.msg
    if "depth limit" in message:
        return f"JSON nested deeper than {JSON_MAX_DEPTH} levels"
    if "infinity" in message:
        return f"number at column {column} is out of range (overflows a double)"
    if "after document" in message:
        return f"trailing garbage after the JSON value at column {column}"
    if "empty" in message:
        return "line holds no JSON value"
    text = raw.decode("utf-8")
    token = text[exc.pos : exc.pos + 9].lstrip("-")
    if token.startswith(("NaN", "Infinity")):
        return f"{token[:3] if token.startswith('NaN') else 'Infinity'} at column {column} is not valid JSON"
    if unterminated and "end of data" in message:
        return "truncated: the last line ends inside its JSON value (no newline at end of file)"
    return f"invalid JSON at column {column}: {message}"


def utf8_error_reason(raw: bytes) -> str | None:
    """The position of the first byte that is not UTF-8, or None when raw decodes."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})"
    return None


class _PairsObject(dict):
    """A dict that remembers the keys it saw twice (stdlib json object_pairs_hook)."""

    duplicates: tuple[str, ...] = ()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _PairsObject:
    obj = _PairsObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated: list[str] = []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        obj.duplicates = tuple(repeated)
    return obj


def _checked_int(text: str) -> int:
    value = int(text)
    if not -_BIG_INT < value < _BIG_INT:
        raise OverflowError(text)
    return value


def strict_problems(raw: bytes) -> list[FieldProblem]:
    """Ambiguities orjson accepts silently: duplicate keys and integers beyond 64 bits.

    orjson keeps the last of duplicate keys and turns big integers into lossy floats; the stdlib
    parser (slow, so only run when a cheap byte scan suggests it) tells us exactly.
    """
    try:
        obj = json.loads(raw, object_pairs_hook=_pairs_hook, parse_int=_checked_int)
    except OverflowError as exc:
        return [(None, f"integer {_clip(str(exc))} does not fit in 64 bits")]
    except (ValueError, RecursionError):
        return []
    if not isinstance(obj, dict):
        return []
    problems: list[FieldProblem] = []
    for where, inner in (("", obj), ("body.", obj.get("body")), ("params.", obj.get("params"))):
        for key in getattr(inner, "duplicates", ()):
            problems.append((f"{where}{key}", "key appears more than once in the object"))
    return problems


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LineValidator:
    """Applies the per-line rules; remembers the file's endpoint across lines."""

    def __init__(self, default_provider: str | None, limits: dict[str, ShardLimits]) -> None:
        self.default_provider = default_provider
        self.limits = limits
        self.endpoint: str | None = None
        self.unknown_keys: dict[str, int] = {}  # top-level keys not sent upstream -> lines
        self._targets: dict[str, Target | str] = {}
        self._routes: dict[str, Route] = {}

    def check(self, obj: object) -> Request | list[FieldProblem]:
        """Validate one parsed line; a Request when valid, else every problem found.

        The common case (a well-formed line for a model already seen) takes a short path; any
        deviation falls through to the full check, which names every problem.
        """
        if type(obj) is dict:
            custom_id = obj.get("custom_id")
            openai_style = len(obj) == 4
            if openai_style:
                body = obj.get("body")
                usual = obj.get("method") == "POST" and obj.get("url") == self.endpoint
            else:
                body = obj.get("params")
                usual = len(obj) == 2 and self.endpoint == MESSAGES_ENDPOINT
            if usual and type(custom_id) is str and custom_id and type(body) is dict:
                model = body.get("model")
                route = self._routes.get(model) if type(model) is str else None
                if (
                    route is not None
                    and route.native is None
                    and body.get("stream") is not True
                    and (route.custom_id_re is None or route.custom_id_re.fullmatch(custom_id))
                ):
                    body["model"] = route.bare
                    try:
                        if route.openai_line is openai_style:
                            payload = orjson.dumps(obj)
                        else:
                            payload = orjson.dumps(_normalized(custom_id, route, body))
                    except TypeError:
                        payload = b""
                    if 0 < len(payload) <= route.max_request_bytes:
                        return (custom_id, route, payload)
                    body["model"] = model
        return self._check_fully(obj)

    def _check_fully(self, obj: object) -> Request | list[FieldProblem]:
        if type(obj) is not dict:
            return [(None, f"line is a JSON {json_type(obj)}, not an object")]
        problems: list[FieldProblem] = []
        custom_id = obj.get("custom_id")
        if type(custom_id) is not str:
            reason = (
                "missing"
                if custom_id is None and "custom_id" not in obj
                else (f"must be a string, got {json_type(custom_id)}")
            )
            problems.append(("custom_id", reason))
            custom_id = None
        elif not custom_id:
            problems.append(("custom_id", "empty"))
            custom_id = None
        body = obj.get("body")
        if body is not None or "params" not in obj:
            body_field = "body"
            endpoint = self._check_openai_line(obj, problems)
            if "params" in obj:
                problems.append(("params", "not allowed together with body"))
        else:
            body_field = "params"
            body = obj["params"]
            endpoint = self._check_anthropic_line(obj, problems)
        if len(obj) > (4 if body_field == "body" else 2):
            self._note_unknown_keys(obj)
        target = None
        if type(body) is not dict:
            reason = (
                "missing"
                if body is None and body_field not in obj
                else (f"must be a JSON object, got {json_type(body)}")
            )
            if body_field == "body" and body is None and body_field not in obj:
                reason = "missing (an OpenAI batch line needs body; an Anthropic-style line params)"
            problems.append((body_field, reason))
        else:
            target = self._check_body(body, body_field, problems)
        if target is None or endpoint is None:
            return problems
        pattern = target.custom_id_re
        if custom_id is not None and pattern is not None and not pattern.fullmatch(custom_id):
            problems.append(
                (
                    "custom_id",
                    f"{_clip(custom_id)!r} is not allowed by {target.provider} "
                    f"(must match {target.traits.custom_id_pattern})",
                )
            )
        if endpoint not in target.traits.endpoints:
            served = " and ".join(target.traits.endpoints)
            problems.append(("url", f"{target.provider} batches serve {served}, not {endpoint}"))
        if problems or custom_id is None:
            return problems
        assert type(body) is dict  # a target was found in it
        model = body["model"]
        route = Route(
            key=(target.provider, target.model, endpoint),
            bare=target.model,
            openai_line=target.traits.line_format == "openai",
            custom_id_re=target.custom_id_re,
            max_request_bytes=target.limits.max_bytes_per_request,
            shrink=len(model.encode()) - len(target.model.encode()),
            native=converter(target.provider, target.model)
            if target.traits.native_bodies
            else None,
        )
        if len(self._routes) >= _MODEL_CACHE_SIZE:
            self._routes.clear()
        self._routes[model] = route
        body["model"] = target.model
        if route.native is not None:
            try:
                body = route.native(body)
            except ValueError as exc:
                return [(None, str(exc))]
        # A line that already is the request keeps its key order, as on the short path: a line
        # must not be written differently for being a model's first in a block or a process.
        as_is = route.openai_line and route.native is None and len(obj) == 4 and "body" in obj
        try:
            payload = orjson.dumps(obj if as_is else _normalized(custom_id, route, body))
        except TypeError:  # orjson writes at most 254 nested levels (it reads 1024)
            return [(None, f"JSON nested deeper than {JSON_MAX_WRITE_DEPTH} levels")]
        if len(payload) > route.max_request_bytes:
            return [
                (
                    None,
                    f"request is {len(payload):,} bytes, over {target.provider}'s per-request "
                    f"limit of {target.limits.max_bytes_per_request:,} bytes",
                )
            ]
        return (custom_id, route, payload)

    def _check_openai_line(self, obj: dict, problems: list[FieldProblem]) -> str | None:
        method = obj.get("method")
        if method != "POST":
            problems.append(
                (
                    "method",
                    'missing (must be "POST")'
                    if "method" not in obj
                    else (f'must be "POST", got {_clip(repr(method))}'),
                )
            )
        if "url" not in obj:
            problems.append(("url", "missing"))
            return None
        return self._check_url(obj["url"], problems)

    def _check_anthropic_line(self, obj: dict, problems: list[FieldProblem]) -> str | None:
        if "method" in obj and obj["method"] != "POST":
            problems.append(("method", f'must be "POST", got {_clip(repr(obj["method"]))}'))
        return self._check_url(obj.get("url", MESSAGES_ENDPOINT), problems)

    def _check_url(self, url: object, problems: list[FieldProblem]) -> str | None:
        if url not in BATCH_ENDPOINTS or type(url) is not str:
            shown = _clip(repr(url)) if type(url) is str else f"a {json_type(url)}"
            problems.append(("url", f"{shown} is not a batch endpoint (one of {_ENDPOINT_LIST})"))
            return None
        if self.endpoint is None:
            self.endpoint = url
            return url
        if url != self.endpoint:
            problems.append(("url", f"{url} differs from the file's endpoint {self.endpoint}"))
            return None
        return url

    def _check_body(
        self, body: dict, body_field: str, problems: list[FieldProblem]
    ) -> Target | None:
        if body.get("stream") is True:
            problems.append((f"{body_field}.stream", "true is not allowed in a batch request"))
        model = body.get("model")
        if type(model) is not str or not model:
            reason = "missing" if "model" not in body else "must be a non-empty string"
            problems.append((f"{body_field}.model", reason))
            return None
        target = self._targets.get(model)
        if target is None:
            target = self._resolve(model)
            if len(self._targets) >= _MODEL_CACHE_SIZE:
                self._targets.clear()
            self._targets[model] = target
        if isinstance(target, str):
            problems.append((f"{body_field}.model", target))
            return None
        return target

    def _resolve(self, model: str) -> Target | str:
        """The target of a model string, or the reason it has none."""
        parts = split_model(model)
        if parts is not None and parts[0] in PROVIDERS:
            provider, bare = parts
        elif self.default_provider is not None:
            provider, bare = self.default_provider, model
        elif parts is None:
            return (
                f"{_clip(model)!r} is not in provider/model form and no default provider "
                "is configured"
            )
        else:
            supported = ", ".join(sorted(PROVIDERS))
            return f"unknown provider {_clip(parts[0])!r} (supported: {supported})"
        traits = PROVIDERS[provider]
        pattern = re.compile(traits.custom_id_pattern) if traits.custom_id_pattern else None
        return Target(provider, bare, traits, self.limits[provider], pattern)

    def _note_unknown_keys(self, obj: dict) -> None:
        for key in sorted(obj.keys() - _KNOWN_KEYS):
            self.unknown_keys[key] = self.unknown_keys.get(key, 0) + 1
