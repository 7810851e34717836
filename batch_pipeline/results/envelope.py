"""The envelope of a result line around its body, recognized for a whole block at once.

An envelope is a pair of regular expressions (RE2, vectorized over the block's lines): `head`
matches from the start of the line up to and including the body's opening brace and captures
the custom_id (and the HTTP status and request id where the envelope has them); `tail` matches
from the body's closing brace to the end of the line. Both are strict: plain JSON tokens in a
fixed key order, strings without escapes. The body is what lies between; it is only taken once
the body decoder has read it as exactly one JSON object (`columnar.decode_bodies`), so a
recognized line is valid JSON and its body is byte for byte what the provider wrote.

A line no envelope recognizes (other key orders, escapes, error objects, truncation, ...)
is left to the per-line code, which handles every shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.results.blocks import LineBlock

_WS = r"[ \t\r]*"
_CHAR = r'[^"\\\x00-\x1f]'  # a string character that needs no unescaping
_END = r"[ \t\r\n]*)$"  # closes the tail group: JSON whitespace up to the end of the line
TAIL_BYTES = 64


def _tokens(*parts: str) -> str:
    """JSON tokens with optional whitespace between them."""
    return _WS.join(parts)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One line layout: `kind` is "response" (an HTTP status and a body, OpenAI style) or
    "succeeded" (an Anthropic-style succeeded result, whose message is the body)."""

    name: str
    kind: str
    head: str
    tail: str


OPENAI_RESPONSE = Envelope(
    "openai_response",
    "response",
    # {"id":"..","custom_id":"..","response":{"status_code":200,"request_id":"..","body":{
    # (id and request_id optional); written so that one character decides each step
    "^(?P<head>"
    + _tokens(
        r"\{",
        rf'"(?:id"{_WS}:{_WS}"{_CHAR}*"{_WS},{_WS}")?custom_id"',
        ":",
        rf'"(?P<custom_id>{_CHAR}+)"',
        ",",
        '"response"',
        ":",
        r"\{",
        '"status_code"',
        ":",
        "(?P<status>0|[1-9][0-9]{0,8})",
        ",",
        rf'"(?:request_id"{_WS}:{_WS}(?P<request_id>"{_CHAR}*"|null){_WS},{_WS}")?body"',
        ":",
        r"\{",
    )
    + ")",
    # }},"error":null} or }}}
    "(?P<tail>" + _tokens(r"\}", r"\}", rf'(?:,{_WS}"error"{_WS}:{_WS}null{_WS})?\}}') + _END,
)
ANTHROPIC_SUCCEEDED = Envelope(
    "anthropic_succeeded",
    "succeeded",
    # {"custom_id":"..","result":{"type":"succeeded","message":{
    "^(?P<head>"
    + _tokens(
        r"\{",
        '"custom_id"',
        ":",
        rf'"(?P<custom_id>{_CHAR}+)"',
        ",",
        '"result"',
        ":",
        r"\{",
        '"type"',
        ":",
        '"succeeded"',
        ",",
        '"message"',
        ":",
        r"\{",
    )
    + ")",
    "(?P<tail>" + _tokens(r"\}", r"\}", r"\}") + _END,
)
ENVELOPES: tuple[Envelope, ...] = (OPENAI_RESPONSE, ANTHROPIC_SUCCEEDED)


@dataclass(frozen=True, slots=True)
class Recognized:
    """The lines of a block an envelope recognized, in line order: their line indices, the
    captured columns, and where each body lies in the block's buffer."""

    lines: np.ndarray
    custom_id: pa.Array
    status_code: pa.Array  # int32; null for a succeeded result
    request_id: pa.Array
    body_start: np.ndarray
    body_end: np.ndarray

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, positions: np.ndarray) -> Recognized:
        """The subset at `positions` (indices into this one)."""
        index = pa.array(positions, pa.int64())
        return Recognized(
            self.lines[positions],
            self.custom_id.take(index),
            self.status_code.take(index),
            self.request_id.take(index),
            self.body_start[positions],
            self.body_end[positions],
        )


def recognize(block: LineBlock, candidates: np.ndarray | None = None) -> Recognized:
    """The lines of `block` (of `candidates`, line indices, when given) that an envelope
    recognizes, with their captured columns."""
    lines = block.lines()
    pending = np.arange(len(block)) if candidates is None else candidates
    parts: list[Recognized] = []
    for envelope in ENVELOPES:
        if not len(pending):
            break
        subset = lines if len(pending) == len(lines) else lines.take(pa.array(pending))
        found, rest = _match(envelope, subset, pending, block)
        parts.append(found)
        pending = rest
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return _nothing()
    merged = _concat(parts)
    order = np.argsort(merged.lines, kind="stable")
    return merged.take(order)


def _match(
    envelope: Envelope, lines: pa.Array, indices: np.ndarray, block: LineBlock
) -> tuple[Recognized, np.ndarray]:
    """Apply one envelope to `lines` (the block's lines at `indices`)."""
    heads = pc.extract_regex(lines, envelope.head)
    tails = pc.extract_regex(pc.binary_slice(lines, -TAIL_BYTES), envelope.tail)
    ok = np.asarray(heads.is_valid()) & np.asarray(tails.is_valid())
    head_length = _lengths(pc.struct_field(heads, "head"))
    tail_length = _lengths(pc.struct_field(tails, "tail"))
    starts = block.starts[indices]
    lengths = _lengths(lines)
    body_start = starts + np.where(ok, head_length, 1) - 1
    body_end = starts + lengths - np.where(ok, tail_length, 1) + 1
    ok &= body_end > body_start
    hit = np.flatnonzero(ok)
    index = pa.array(hit, pa.int64())
    custom_id = pc.struct_field(heads, "custom_id").take(index).cast(pa.string())
    count = len(hit)
    if envelope.kind == "response":
        status = pc.struct_field(heads, "status").take(index).cast(pa.string()).cast(pa.int32())
        quoted = pc.struct_field(heads, "request_id").take(index).cast(pa.string())
        request_id = pc.if_else(
            pc.starts_with(quoted, '"'),
            pc.utf8_slice_codeunits(quoted, 1, -1),
            pa.scalar(None, pa.string()),
        )
    else:
        status = pa.nulls(count, pa.int32())
        request_id = pa.nulls(count, pa.string())
    found = Recognized(indices[hit], custom_id, status, request_id, body_start[hit], body_end[hit])
    return found, indices[~ok]


def _nothing() -> Recognized:
    empty = np.empty(0, dtype=np.int64)
    return Recognized(
        empty,
        pa.nulls(0, pa.string()),
        pa.nulls(0, pa.int32()),
        pa.nulls(0, pa.string()),
        empty,
        empty,
    )


def _lengths(values: pa.Array) -> np.ndarray:
    """Byte lengths as int64 (0 for null)."""
    return pc.fill_null(pc.binary_length(values), 0).to_numpy().astype(np.int64)


def _concat(parts: list[Recognized]) -> Recognized:
    return Recognized(
        np.concatenate([p.lines for p in parts]),
        pa.concat_arrays([p.custom_id for p in parts]),
        pa.concat_arrays([p.status_code for p in parts]),
        pa.concat_arrays([p.request_id for p in parts]),
        np.concatenate([p.body_start for p in parts]),
        np.concatenate([p.body_end for p in parts]),
    )
