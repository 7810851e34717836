"""Recognized result lines -> results and errors columns, a block at a time, in Arrow.

The bodies of the lines an envelope recognized are decoded together by pyarrow's JSON reader
with an explicit schema (only the fields the shapes read, typed); each column is then computed
with Arrow compute for the whole block. The values equal what the per-line code
(normalize.classify_item) gives for the same line: where the typed decoder cannot tell (a
value of an unexpected type, a key present but null where presence matters), the line is handed
back to the per-line code instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from batch_pipeline.prices import Price
from batch_pipeline.results.blocks import LineBlock
from batch_pipeline.results.columns import constant, field, is_set, mapped
from batch_pipeline.results.context import BatchContext
from batch_pipeline.results.envelope import Recognized
from batch_pipeline.results.normalize import is_retryable_code, normalize_finish_reason
from batch_pipeline.results.schema import (
    ERROR_COLUMNS,
    ERRORS_SCHEMA,
    RESULT_COLUMNS,
    RESULTS_SCHEMA,
)
from batch_pipeline.results.shapes import EMBEDDING_TYPE, SHAPES

_COUNT = pa.int64()
# Counts of Bedrock Converse and Gemini usage: bodies that carry them are read per line
_PER_LINE_COUNTS = (
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
    "promptTokenCount",
    "candidatesTokenCount",
    "totalTokenCount",
)
_USAGE = pa.struct(
    [
        *(
            (name, _COUNT)
            for name in (
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "cachedContentTokenCount",
                "thoughtsTokenCount",
                *_PER_LINE_COUNTS,
            )
        ),
        *(
            (name, pa.struct([("cached_tokens", _COUNT)]))
            for name in ("prompt_tokens_details", "input_tokens_details")
        ),
        *(
            (name, pa.struct([("reasoning_tokens", _COUNT)]))
            for name in ("completion_tokens_details", "output_tokens_details")
        ),
    ]
)
_ERROR = pa.struct([("code", pa.string()), ("type", pa.string()), ("message", pa.string())])


def _body_schema() -> pa.Schema:
    """Every body field a shape, the usage or an error body reads, each with its one type."""
    fields: dict[str, pa.Field] = {}
    common = (
        pa.field("model", pa.string()),
        pa.field("usage", _USAGE),
        pa.field("error", _ERROR),
        pa.field("message", pa.string()),
    )
    for one in (*common, *(f for shape in SHAPES for f in shape.fields)):
        known = fields.setdefault(one.name, one)
        if known.type != one.type:
            raise TypeError(f"body field {one.name!r} is read as {known.type} and {one.type}")
    return pa.schema(list(fields.values()))


BODY_SCHEMA = _body_schema()
_PARSE = pa_json.ParseOptions(explicit_schema=BODY_SCHEMA, unexpected_field_behavior="ignore")
_READ = pa_json.ReadOptions(block_size=1 << 20, use_threads=True)
_WINDOW = 256  # bodies decoded together once a block's bodies were refused all at once
_MAX_REFUSED = 8  # refused bodies after which the rest of a window goes to the per-line code
_ROW = re.compile(r"in row (\d+)$")
_NEWLINE_VIEW = np.zeros(16, dtype=np.uint8)
_NEWLINE_VIEW[0], _NEWLINE_VIEW[4] = 1, 10  # a string_view of length 1 holding "\n" inline


def _views(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Arrow string_view structs (16 bytes each) for the slices [start, start + length) of
    `data`, buffer 0 (Arrow columnar format: length, then 12 bytes inline, or a 4-byte prefix,
    the buffer index and the offset)."""
    views = np.zeros((len(starts), 16), dtype=np.uint8)
    words = views.view(np.int32)
    words[:, 0] = lengths
    short = lengths <= 12
    if short.any():
        rows = np.flatnonzero(short)
        column = np.arange(12)
        inside = column < lengths[rows, None]
        source = np.where(inside, starts[rows, None] + column, 0)
        views[rows, 4:16] = np.where(inside, data[source], 0)
    rows = np.flatnonzero(~short)
    views[rows, 4:8] = data[starts[rows, None] + np.arange(4)]
    words[rows, 3] = starts[rows]
    return views


def slices(block: LineBlock, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
    """The text at [start, end) of the block's buffer for each pair, as one string array (one
    copy, made in Arrow); the block must be valid UTF-8 there."""
    data = np.frombuffer(block.data, dtype=np.uint8)
    views = _views(data, starts, ends - starts)
    array = pa.Array.from_buffers(
        pa.string_view(), len(starts), [None, pa.py_buffer(views), block.data]
    )
    return array.cast(pa.string())


def decode_bodies(block: LineBlock, found: Recognized) -> tuple[pa.StructArray, np.ndarray]:
    """The recognized bodies decoded with BODY_SCHEMA, and a mask of those decoded.

    All at once first; when the reader refuses (a value of another type, not exactly one JSON
    object), window by window, and within a failing window the refused body (the reader names
    its row, else halving finds it) is left to the per-line code and the rest retried.
    """
    count = len(found)
    lengths = found.body_end - found.body_start
    data = np.frombuffer(block.data, dtype=np.uint8)
    views = np.empty((2 * count, 16), dtype=np.uint8)
    views[0::2] = _views(data, found.body_start, lengths)
    views[1::2] = _NEWLINE_VIEW
    joined = (
        pa.Array.from_buffers(pa.string_view(), 2 * count, [None, pa.py_buffer(views), block.data])
        .cast(pa.string())
        .buffers()[2]
    )
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=offsets[1:])
    ok = np.zeros(count, dtype=bool)
    tables: list[tuple[int, pa.Table]] = []

    def parse(low: int, high: int, threads: bool) -> tuple[bool, int | None]:
        """Decode bodies [low, high); on refusal, the refused row when the reader names it."""
        part = joined.slice(int(offsets[low]), int(offsets[high] - offsets[low]))
        table, row = _parse(part, threads)
        if table is not None and table.num_rows == high - low:
            tables.append((low, table))
            ok[low:high] = True
            return True, None
        return False, row

    if count and not parse(0, count, True)[0]:
        for window in range(0, count, _WINDOW):
            _isolate(parse, window, min(window + _WINDOW, count))
    if not tables:
        return pa.StructArray.from_arrays(
            [pa.nulls(0, f.type) for f in BODY_SCHEMA], fields=list(BODY_SCHEMA)
        ), ok
    tables.sort(key=lambda entry: entry[0])
    table = pa.concat_tables(t for _, t in tables).combine_chunks()
    bodies = pa.StructArray.from_arrays(
        [
            column.chunk(0) if column.num_chunks else pa.nulls(0, column.type)
            for column in table.columns
        ],
        fields=list(table.schema),
    )
    return bodies, ok


def _isolate(
    parse: Callable[[int, int, bool], tuple[bool, int | None]], low: int, high: int
) -> None:
    """Decode what can be decoded of bodies [low, high), giving up on each refused one (and on
    the rest of the window after _MAX_REFUSED refusals)."""
    runs = [(low, high)]  # a stack, not recursion: no reference cycle keeps buffers alive
    refused = 0
    while runs and refused < _MAX_REFUSED:
        start, end = runs.pop()
        done, row = parse(start, end, False)
        if done:
            continue
        if end - start == 1:
            refused += 1
        elif row is not None and 0 <= row < end - start:
            refused += 1
            if start + row + 1 < end:
                runs.append((start + row + 1, end))
            if row:
                runs.append((start, start + row))
        else:
            middle = (start + end) // 2
            runs += [(middle, end), (start, middle)]


def _parse(docs: pa.Buffer, threads: bool) -> tuple[pa.Table | None, int | None]:
    """Newline-separated bodies decoded with BODY_SCHEMA; else None and the row the reader
    refused, when it says (it does when it decodes in one piece, without threads)."""
    read = _READ if threads else pa_json.ReadOptions(block_size=docs.size + 1, use_threads=False)
    try:
        table = pa_json.read_json(pa.BufferReader(docs), read_options=read, parse_options=_PARSE)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        found = None if threads else _ROW.search(str(exc))
        return None, int(found.group(1)) if found else None
    return table, None


@dataclass(frozen=True, slots=True)
class BodyColumns:
    """What the decoded bodies hold, one value per body."""

    model: pa.Array
    endpoint: pa.Array
    output_text: pa.Array
    finish_reason: pa.Array
    embedding: pa.Array
    prompt_tokens: pa.Array
    completion_tokens: pa.Array
    total_tokens: pa.Array
    cached_tokens: pa.Array
    reasoning_tokens: pa.Array
    error_code: pa.Array
    error_message: pa.Array

    def take(self, indices: pa.Array) -> BodyColumns:
        """The rows at `indices`."""
        return BodyColumns(*(getattr(self, f.name).take(indices) for f in fields(self)))


def read_bodies(bodies: pa.StructArray) -> tuple[BodyColumns, np.ndarray]:
    """The columns of decoded bodies (the first shape that claims a body reads it), and where
    they cannot be told from what was decoded: those rows must be redone by the per-line code."""
    count = len(bodies)
    taken = np.zeros(count, dtype=bool)
    undecidable = np.zeros(count, dtype=bool)
    pieces: dict[str, list[tuple[np.ndarray, pa.Array]]] = {
        "endpoint": [],
        "output_text": [],
        "finish_reason": [],
        "embedding": [],
    }
    for shape in SHAPES:
        mine = shape.claims_column(bodies) & ~taken
        undecidable |= shape.undecidable(bodies) & ~taken & ~mine
        taken |= mine
        if not mine.any():
            continue
        rows = np.flatnonzero(mine)
        answer = shape.read_column(bodies.filter(pa.array(mine)))
        pieces["endpoint"].append((rows, answer.endpoint))
        pieces["output_text"].append((rows, answer.output_text))
        pieces["finish_reason"].append((rows, answer.finish_reason))
        if answer.embedding is not None:
            pieces["embedding"].append((rows, answer.embedding))
    usage = field(bodies, "usage")
    prompt, completion, total, cached, reasoning, unclear = _usage_columns(usage)
    undecidable |= unclear
    code, message = _body_error(bodies)
    reason = _spread(pieces["finish_reason"], count, pa.string())
    return BodyColumns(
        model=field(bodies, "model"),
        endpoint=_spread(pieces["endpoint"], count, pa.string()),
        output_text=_spread(pieces["output_text"], count, pa.string()),
        finish_reason=mapped(reason, normalize_finish_reason, pa.string()),
        embedding=_spread(pieces["embedding"], count, EMBEDDING_TYPE),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        error_code=code,
        error_message=message,
    ), undecidable


def _spread(pieces: list[tuple[np.ndarray, pa.Array]], count: int, type_: pa.DataType) -> pa.Array:
    """Values known for some rows (row numbers, values) as one column of `count` rows, null
    elsewhere."""
    if not pieces:
        return pa.nulls(count, type_)
    rows = np.concatenate([r for r, _ in pieces])
    values = pa.concat_arrays([v.cast(type_) for _, v in pieces])
    where = np.full(count, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows))
    return values.take(pa.array(where, mask=where < 0))


def _nonzero_or(value: pa.Array, other: pa.Array) -> pa.Array:
    return pc.if_else(value.is_valid(), value, other)


def _usage_columns(
    usage: pa.Array,
) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array, pa.Array, np.ndarray]:
    """normalize._fill_tokens for a column of usage objects, plus the rows where a details
    object that is empty (`{}`, falsy for the per-line code) cannot be told apart from one
    without the counted key and the two readings differ."""
    prompt = field(usage, "prompt_tokens")
    completion = field(usage, "completion_tokens")
    neither = pc.and_(prompt.is_null(), completion.is_null())
    input_tokens = field(usage, "input_tokens")
    cache_writes = pc.fill_null(field(usage, "cache_creation_input_tokens"), 0)
    cache_reads = pc.fill_null(field(usage, "cache_read_input_tokens"), 0)
    anthropic_prompt = pc.add_checked(pc.add_checked(input_tokens, cache_writes), cache_reads)
    prompt = pc.if_else(neither, anthropic_prompt, prompt)
    completion = pc.if_else(neither, field(usage, "output_tokens"), completion)
    total = _nonzero_or(
        field(usage, "total_tokens"),
        pc.add_checked(prompt, pc.fill_null(completion, 0)),
    )
    prompt_details = field(usage, "prompt_tokens_details")
    input_details = field(usage, "input_tokens_details")
    chosen = pc.if_else(prompt_details.is_valid(), prompt_details, input_details)
    cached = pc.coalesce(
        field(chosen, "cached_tokens"),
        field(usage, "cache_read_input_tokens"),
        field(usage, "cachedContentTokenCount"),
    )
    unclear = (
        is_set(prompt_details)
        & ~is_set(field(prompt_details, "cached_tokens"))
        & is_set(field(input_details, "cached_tokens"))
    )
    completion_details = field(usage, "completion_tokens_details")
    output_details = field(usage, "output_tokens_details")
    thoughts = field(usage, "thoughtsTokenCount")
    chosen = pc.if_else(completion_details.is_valid(), completion_details, output_details)
    reasoning = pc.if_else(chosen.is_valid(), field(chosen, "reasoning_tokens"), thoughts)
    otherwise = pc.if_else(
        output_details.is_valid(), field(output_details, "reasoning_tokens"), thoughts
    )
    unclear |= (
        is_set(completion_details)
        & ~is_set(field(completion_details, "reasoning_tokens"))
        & is_set(otherwise)
    )
    for name in _PER_LINE_COUNTS:
        unclear |= is_set(field(usage, name))
    return prompt, completion, total, cached, reasoning, unclear


def _non_empty(values: pa.Array) -> pa.Array:
    """Null where a string is empty (the per-line code's `value or None`)."""
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def _body_error(bodies: pa.StructArray) -> tuple[pa.Array, pa.Array]:
    """normalize._body_error for decoded bodies: (code or type, message) of `error`, else the
    body's own `message`."""
    error = field(bodies, "error")
    code = pc.coalesce(_non_empty(field(error, "code")), _non_empty(field(error, "type")))
    message = pc.if_else(
        error.is_valid(), _non_empty(field(error, "message")), _non_empty(field(bodies, "message"))
    )
    return code, message


def retryable_column(status: pa.Array, code: pa.Array) -> pa.Array:
    """normalize.is_retryable_status(status) or is_retryable_code(code), per row."""
    by_status = pc.fill_null(
        pc.or_kleene(
            pc.is_in(status, value_set=pa.array([408, 409, 429], pa.int32())),
            pc.greater_equal(status, 500),
        ),
        False,
    )
    return pc.or_(by_status, mapped(code, is_retryable_code, pa.bool_()))


def costs(prompt: pa.Array, completion: pa.Array, price: Price) -> pa.Array:
    """price.cost per row (a missing count counts as 0), null where neither count is known:
    the same float operations in the same order, so the same values."""
    known = np.asarray(pc.or_(prompt.is_valid(), completion.is_valid()))
    tokens_in = pc.fill_null(prompt, 0).to_numpy(zero_copy_only=False).astype(np.float64)
    tokens_out = pc.fill_null(completion, 0).to_numpy(zero_copy_only=False).astype(np.float64)
    full = (tokens_in * price.input_per_1m + tokens_out * price.output_per_1m) / 1e6
    return pa.array(full * (1 - price.batch_discount), mask=~known, type=pa.float64())


LINE = "__line"  # the block line index a row came from (sorts rows of both paths together)


@dataclass(frozen=True, slots=True)
class Decoded:
    """The recognized lines of a block whose bodies were decoded, with their body columns
    (aligned), and the recognized lines handed back to the per-line code (`redo`)."""

    found: Recognized
    columns: BodyColumns
    redo: np.ndarray


def decode(block: LineBlock, found: Recognized) -> Decoded:
    """Decode and read the bodies of recognized lines."""
    bodies, decoded = decode_bodies(block, found)
    columns, undecidable = read_bodies(bodies)
    redo = np.concatenate([found.lines[~decoded], found.lines[decoded][undecidable]])
    if undecidable.any():
        columns = columns.take(pa.array(np.flatnonzero(~undecidable)))
    usable = np.flatnonzero(decoded)[~undecidable]
    return Decoded(found.take(usable), columns, np.sort(redo))


def rows(
    block: LineBlock,
    decoded: Decoded,
    positions: np.ndarray,
    input_line: pa.Array,
    ctx: BatchContext,
) -> tuple[pa.Table, pa.Table]:
    """Results and errors rows (RESULT_COLUMNS / ERROR_COLUMNS plus LINE) for the decoded
    lines at `positions`, whose input lines are `input_line` (or null)."""
    index = pa.array(positions, pa.int64())
    found = decoded.found.take(positions)
    columns = decoded.columns.take(index)
    status = found.status_code
    code = pc.fill_null(status, 200).to_numpy()
    success = (code >= 200) & (code < 300)  # a succeeded result has no status
    return (
        _results(block, found, columns, input_line, ctx, success),
        _errors(block, found, columns, input_line, ctx, ~success),
    )


def _results(
    block: LineBlock,
    rows: Recognized,
    columns: BodyColumns,
    input_line: pa.Array,
    ctx: BatchContext,
    mask: np.ndarray,
) -> pa.Table:
    where = pa.array(mask)
    count = int(mask.sum())
    picked = np.flatnonzero(mask)

    def take(array: pa.Array) -> pa.Array:
        return array.filter(where)

    prompt = take(columns.prompt_tokens)
    completion = take(columns.completion_tokens)
    values = {
        "custom_id": take(rows.custom_id),
        "input_line": take(input_line),
        "batch_id": constant(ctx.batch_id, count),
        "provider": constant(ctx.provider, count),
        "model": constant(ctx.model, count) if ctx.model is not None else take(columns.model),
        "endpoint": (
            constant(ctx.endpoint, count) if ctx.endpoint is not None else take(columns.endpoint)
        ),
        "status_code": take(rows.status_code),
        "request_id": take(rows.request_id),
        "output_text": take(columns.output_text),
        "finish_reason": take(columns.finish_reason),
        "embedding": take(columns.embedding),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": take(columns.total_tokens),
        "cached_tokens": take(columns.cached_tokens),
        "reasoning_tokens": take(columns.reasoning_tokens),
        "cost_usd": (
            costs(prompt, completion, ctx.price)
            if ctx.price is not None
            else pa.nulls(count, pa.float64())
        ),
        "body": slices(block, rows.body_start[picked], rows.body_end[picked]),
        LINE: pa.array(rows.lines[picked], pa.int64()),
    }
    return pa.table(values, schema=_RESULT_ROWS)


def _errors(
    block: LineBlock,
    rows: Recognized,
    columns: BodyColumns,
    input_line: pa.Array,
    ctx: BatchContext,
    mask: np.ndarray,
) -> pa.Table:
    where = pa.array(mask)
    count = int(mask.sum())
    picked = np.flatnonzero(mask)
    lines = rows.lines[picked]
    status = rows.status_code.filter(where)
    code = columns.error_code.filter(where)
    http = pc.binary_join_element_wise("HTTP ", status.cast(pa.string()), "")
    raw = pc.utf8_rtrim(slices(block, block.starts[lines], block.ends[lines]), characters="\r\n")
    values = {
        "custom_id": rows.custom_id.filter(where),
        "input_line": input_line.filter(where),
        "batch_id": constant(ctx.batch_id, count),
        "provider": constant(ctx.provider, count),
        "stage": constant("request", count),
        "status_code": status,
        "error_code": code,
        "error_message": pc.coalesce(columns.error_message.filter(where), http),
        "retryable": retryable_column(status, code),
        "raw": raw,
        LINE: pa.array(lines, pa.int64()),
    }
    return pa.table(values, schema=_ERROR_ROWS)


_RESULT_ROWS = pa.schema(
    [*(RESULTS_SCHEMA.field(name) for name in RESULT_COLUMNS), pa.field(LINE, pa.int64())]
)
_ERROR_ROWS = pa.schema(
    [*(ERRORS_SCHEMA.field(name) for name in ERROR_COLUMNS), pa.field(LINE, pa.int64())]
)
