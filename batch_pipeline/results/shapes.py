"""The response body shapes a successful result can have, each in one place.

A shape says which body fields it reads (`fields`, typed: the columnar decoder keeps only
these), how to recognize a body of its kind and how to read its answer: `output_text`,
`finish_reason` (as the provider wrote it; normalized by the caller) and `embedding`. It does so
twice, side by side: per row on a parsed dict (`claims`, `read`), used for the lines the
columnar path leaves to the per-line code, and per block on Arrow arrays (`claims_column`,
`read_column`). Shapes are tried in SHAPES order; the first that claims a body reads it.

To add a shape: write a subclass with its fields and the four methods (or a RowOnlyShape, for
bodies that only /results items carry), put it in SHAPES where it must be tried, and add example
bodies to tests/results/test_results_columnar.py, which checks that both forms agree on them.
"""

from __future__ import annotations

import array
import base64
import binascii
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.results.columns import (
    constant,
    field,
    first,
    flattened,
    is_set,
    joined_texts,
    strings_in,
)

EMBEDDING_TYPE = pa.list_(pa.float32())
_TEXT_BLOCK = pa.struct([("type", pa.string()), ("text", pa.string())])


@dataclass(frozen=True, slots=True)
class Answer:
    """What a shape reads from one body."""

    endpoint: str | None = None
    output_text: str | None = None
    finish_reason: Any = None  # as the provider wrote it
    embedding: list[float | None] | None = None


@dataclass(frozen=True, slots=True)
class AnswerColumns:
    """What a shape reads from the bodies it claims, one value per body of the block."""

    endpoint: pa.Array
    output_text: pa.Array
    finish_reason: pa.Array
    embedding: pa.Array | None = None


class BodyShape:
    """One kind of successful response body."""

    name: ClassVar[str]
    fields: ClassVar[tuple[pa.Field, ...]]

    def claims(self, body: dict[str, Any]) -> bool:
        """Whether a parsed body is of this shape."""
        raise NotImplementedError

    def read(self, body: dict[str, Any]) -> Answer:
        """The answer in a parsed body of this shape."""
        raise NotImplementedError

    def claims_column(self, bodies: pa.StructArray) -> np.ndarray:
        """Where the decoded bodies are of this shape (the same test as `claims`)."""
        raise NotImplementedError

    def undecidable(self, bodies: pa.StructArray) -> np.ndarray:
        """Where decoded bodies cannot tell whether `claims` holds (a key present but null
        looks like a missing one): those rows take the per-line path."""
        return np.zeros(len(bodies), dtype=bool)

    def read_column(self, bodies: pa.StructArray) -> AnswerColumns:
        """The answers of decoded bodies (every row; the caller keeps those claimed)."""
        raise NotImplementedError


def text_blocks(blocks: Any, kinds: tuple[str, ...] = ("text",)) -> str | None:
    """Concatenated `text` of the blocks whose type is one of `kinds`; None when there is none."""
    if not isinstance(blocks, list):
        return None
    texts = [
        block["text"]
        for block in blocks
        if isinstance(block, dict)
        and block.get("type") in kinds
        and isinstance(block.get("text"), str)
    ]
    return "".join(texts) if texts else None


def _text_blocks_column(blocks: pa.Array, kinds: tuple[str, ...] = ("text",)) -> pa.Array:
    """text_blocks over a column of block lists."""
    parts, rows = flattened(blocks)
    if not len(parts):
        return pa.nulls(len(blocks), pa.string())
    keep = pc.and_(strings_in(field(parts, "type"), kinds), field(parts, "text").is_valid())
    return joined_texts(field(parts, "text"), rows, len(blocks), keep)


class Choices(BodyShape):
    """Chat completions (`choices[0].message`) and legacy completions (`choices[0].text`)."""

    name = "choices"
    fields = (
        pa.field(
            "choices",
            pa.list_(
                pa.struct(
                    [
                        ("message", pa.struct([("content", pa.string())])),
                        ("text", pa.string()),
                        ("finish_reason", pa.string()),
                    ]
                )
            ),
        ),
    )

    def claims(self, body: dict[str, Any]) -> bool:
        return isinstance(body.get("choices"), list)

    def read(self, body: dict[str, Any]) -> Answer:
        choices = body["choices"]
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = choice.get("message")
        reason = choice.get("finish_reason")
        if isinstance(message, dict):
            content = message.get("content")
            text = content if type(content) is str else text_blocks(content)
            return Answer("/v1/chat/completions", text, reason)
        text = choice.get("text")
        return Answer("/v1/completions", text if isinstance(text, str) else None, reason)

    def claims_column(self, bodies: pa.StructArray) -> np.ndarray:
        return is_set(field(bodies, "choices"))

    def read_column(self, bodies: pa.StructArray) -> AnswerColumns:
        choice = first(field(bodies, "choices"))
        message = field(choice, "message")
        chat = message.is_valid()
        endpoint = pc.if_else(chat, "/v1/chat/completions", "/v1/completions")
        text = pc.if_else(chat, field(message, "content"), field(choice, "text"))
        return AnswerColumns(endpoint, text, field(choice, "finish_reason"))


class Embeddings(BodyShape):
    """Embeddings (`data[0].embedding`), as floats or base64 little-endian float32."""

    name = "embeddings"
    fields = (pa.field("data", pa.list_(pa.struct([("embedding", pa.list_(pa.float64()))]))),)

    def claims(self, body: dict[str, Any]) -> bool:
        return isinstance(body.get("data"), list)

    def read(self, body: dict[str, Any]) -> Answer:
        data = body["data"]
        item = data[0] if data and isinstance(data[0], dict) else {}
        vector = item.get("embedding")
        if isinstance(vector, str):
            vector = _base64_floats(vector)
        elif isinstance(vector, list):
            vector = _floats(vector)
        else:
            vector = None
        return Answer("/v1/embeddings", embedding=vector)

    def claims_column(self, bodies: pa.StructArray) -> np.ndarray:
        return is_set(field(bodies, "data"))

    def read_column(self, bodies: pa.StructArray) -> AnswerColumns:
        count = len(bodies)
        vectors = field(first(field(bodies, "data")), "embedding")
        embedding = (
            pa.nulls(count, EMBEDDING_TYPE)
            if pa.types.is_null(vectors.type)
            else vectors.cast(EMBEDDING_TYPE)
        )
        return AnswerColumns(
            constant("/v1/embeddings", count),
            pa.nulls(count, pa.string()),
            pa.nulls(count),
            embedding,
        )


def _floats(values: list[Any]) -> list[float | None] | None:
    """A JSON list of numbers (nulls kept) as floats; None when it holds anything else (the
    body keeps it as it came)."""
    if not all(v is None or type(v) in (int, float) for v in values):
        return None
    try:
        return [None if v is None else float(v) for v in values]
    except OverflowError:  # an integer beyond any float
        return None


def _base64_floats(text: str) -> list[float | None] | None:
    """Little-endian float32s in base64 (encoding_format=base64); None when the text does not
    hold whole floats (the body keeps it as it came)."""
    try:
        raw = base64.b64decode(text)
    except binascii.Error:
        return None
    if len(raw) % 4:
        return None
    floats = array.array("f", raw)
    if sys.byteorder == "big":
        floats.byteswap()
    return list(floats)


class Responses(BodyShape):
    """The Responses API: output_text parts of `output`, finish reason from `status`."""

    name = "responses"
    fields = (
        pa.field("object", pa.string()),
        pa.field(
            "output",
            pa.list_(pa.struct([("type", pa.string()), ("content", pa.list_(_TEXT_BLOCK))])),
        ),
        pa.field("status", pa.string()),
        pa.field("incomplete_details", pa.struct([("reason", pa.string())])),
    )

    def claims(self, body: dict[str, Any]) -> bool:
        return body.get("object") == "response" or isinstance(body.get("output"), list)

    def read(self, body: dict[str, Any]) -> Answer:
        parts: list[str] = []
        called_tool = False
        for item in body.get("output") or ():
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call":
                called_tool = True
            text = text_blocks(item.get("content"), ("output_text",))
            if text is not None:
                parts.append(text)
        status = body.get("status")
        reason: Any
        if status == "incomplete":
            details = body.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
        elif status == "completed":
            reason = "tool_calls" if called_tool else "stop"
        else:
            reason = status
        return Answer("/v1/responses", "".join(parts) if parts else None, reason)

    def claims_column(self, bodies: pa.StructArray) -> np.ndarray:
        named = np.asarray(pc.fill_null(pc.equal(field(bodies, "object"), "response"), False))
        return named | is_set(field(bodies, "output"))

    def read_column(self, bodies: pa.StructArray) -> AnswerColumns:
        count = len(bodies)
        items, owners = flattened(field(bodies, "output"))
        parts, part_owners = flattened(field(items, "content"), owners)
        if len(parts):
            keep = pc.and_(
                strings_in(field(parts, "type"), ("output_text",)),
                field(parts, "text").is_valid(),
            )
            text = joined_texts(field(parts, "text"), part_owners, count, keep)
        else:
            text = pa.nulls(count, pa.string())
        calls = np.asarray(pc.fill_null(pc.equal(field(items, "type"), "function_call"), False))
        called = np.zeros(count, dtype=bool)
        called[owners[calls]] = True
        status = field(bodies, "status")
        completed = pc.if_else(pa.array(called), "tool_calls", "stop")
        reason = pc.case_when(
            pc.make_struct(pc.equal(status, "incomplete"), pc.equal(status, "completed")),
            field(bodies, "incomplete_details", "reason"),
            completed,
            status,
        )
        return AnswerColumns(constant("/v1/responses", count), text, reason)


class Messages(BodyShape):
    """Anthropic Messages: text blocks of `content`, `stop_reason`."""

    name = "messages"
    fields = (
        pa.field("type", pa.string()),
        pa.field("content", pa.list_(_TEXT_BLOCK)),
        pa.field("stop_reason", pa.string()),
    )

    def claims(self, body: dict[str, Any]) -> bool:
        return body.get("type") == "message" or isinstance(body.get("content"), list)

    def read(self, body: dict[str, Any]) -> Answer:
        return Answer("/v1/messages", text_blocks(body.get("content")), body.get("stop_reason"))

    def claims_column(self, bodies: pa.StructArray) -> np.ndarray:
        named = np.asarray(pc.fill_null(pc.equal(field(bodies, "type"), "message"), False))
        return named | is_set(field(bodies, "content"))

    def read_column(self, bodies: pa.StructArray) -> AnswerColumns:
        count = len(bodies)
        text = _text_blocks_column(field(bodies, "content"))
        return AnswerColumns(constant("/v1/messages", count), text, field(bodies, "stop_reason"))


def _untyped_texts(parts: Any) -> str | None:
    """Concatenated `text` of parts without a type (Gemini parts, Converse content blocks),
    leaving out Gemini's thoughts; None when there is none."""
    if not isinstance(parts, list):
        return None
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, dict)
        and isinstance(part.get("text"), str)
        and part.get("thought") is not True
    ]
    return "".join(texts) if texts else None


class RowOnlyShape(BodyShape):
    """A shape read by the per-line code only: bodies that carry its `marks` are handed back
    to it by the columnar path. For shapes that arrive as /results items (read per item
    anyway), never in the output files the columnar path is for."""

    marks: ClassVar[tuple[str, ...]]

    def claims_column(self, bodies: pa.StructArray) -> np.ndarray:
        return np.zeros(len(bodies), dtype=bool)

    def undecidable(self, bodies: pa.StructArray) -> np.ndarray:
        found = np.zeros(len(bodies), dtype=bool)
        for name in self.marks:
            found |= is_set(field(bodies, name))
        return found


class GenerateContent(RowOnlyShape):
    """Gemini's GenerateContentResponse as Vertex batch predictions hold it: the text parts of
    `candidates[0].content` (thoughts left out), `finishReason`."""

    name = "generate_content"
    fields = (
        pa.field("candidates", pa.list_(pa.struct([("finishReason", pa.string())]))),
        pa.field("usageMetadata", pa.struct([("promptTokenCount", pa.int64())])),
    )
    marks = ("candidates", "usageMetadata")

    def claims(self, body: dict[str, Any]) -> bool:
        return isinstance(body.get("candidates"), list)

    def read(self, body: dict[str, Any]) -> Answer:
        candidates = body["candidates"]
        first_one = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        content = first_one.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        return Answer(None, _untyped_texts(parts), first_one.get("finishReason"))


class Converse(RowOnlyShape):
    """Bedrock's Converse answer (non-Anthropic models' batch records): the text blocks of
    `output.message.content`, `stopReason`."""

    name = "converse"
    fields = (pa.field("stopReason", pa.string()),)
    marks = ("stopReason",)

    def claims(self, body: dict[str, Any]) -> bool:
        output = body.get("output")
        return isinstance(output, dict) and isinstance(output.get("message"), dict)

    def read(self, body: dict[str, Any]) -> Answer:
        blocks = body["output"]["message"].get("content")
        return Answer(None, _untyped_texts(blocks), body.get("stopReason"))


class FlatText(BodyShape):
    """Bifrost's flattened Gemini summary `{text, finish_reason, usage}` (no endpoint)."""

    name = "flat_text"
    fields = (pa.field("text", pa.string()), pa.field("finish_reason", pa.string()))

    def claims(self, body: dict[str, Any]) -> bool:
        return "text" in body

    def read(self, body: dict[str, Any]) -> Answer:
        text = body.get("text")
        return Answer(None, text if isinstance(text, str) else None, body.get("finish_reason"))

    def claims_column(self, bodies: pa.StructArray) -> np.ndarray:
        return is_set(field(bodies, "text"))

    def undecidable(self, bodies: pa.StructArray) -> np.ndarray:
        # `"text": null` claims the body, a missing text does not; they differ only when the
        # body has a finish_reason.
        return ~is_set(field(bodies, "text")) & is_set(field(bodies, "finish_reason"))

    def read_column(self, bodies: pa.StructArray) -> AnswerColumns:
        count = len(bodies)
        return AnswerColumns(
            pa.nulls(count, pa.string()), field(bodies, "text"), field(bodies, "finish_reason")
        )


SHAPES: tuple[BodyShape, ...] = (
    Choices(),
    Embeddings(),
    Responses(),
    Messages(),
    GenerateContent(),
    Converse(),
    FlatText(),
)
