"""A block of result lines -> rows in line order: recognized lines in columns, the rest per line.

`scan` splits a block into the lines an envelope recognized and whose bodies decoded (the
common case, converted in columns by `columnar`) and the others, parsed one by one for the
per-line code (`normalize.classify_item`). `RowMaker` adds the batch context to both kinds and
writes them together, in line order, so a collect's rows do not depend on which path took a line.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.results import columnar
from batch_pipeline.results.blocks import LineBlock
from batch_pipeline.results.columnar import LINE, Decoded
from batch_pipeline.results.context import BatchContext
from batch_pipeline.results.envelope import recognize
from batch_pipeline.results.normalize import Outcome, dump_json, error_outcome, parse_json
from batch_pipeline.results.schema import (
    ERROR_COLUMNS,
    ERRORS_SCHEMA,
    RESULT_COLUMNS,
    RESULTS_SCHEMA,
)
from batch_pipeline.results.writer import PartitionWriter

BLANK = object()
SCAN_AHEAD = 1  # blocks scanned ahead of the one being written (each about BLOCK_BYTES)

_RESULT_ROWS = pa.schema([*(RESULTS_SCHEMA.field(n) for n in RESULT_COLUMNS), (LINE, pa.int64())])
_ERROR_ROWS = pa.schema([*(ERRORS_SCHEMA.field(n) for n in ERROR_COLUMNS), (LINE, pa.int64())])


def read_line(line: bytes | str) -> tuple[Any, str | None]:
    """A result line parsed (None: not valid JSON, BLANK: blank) and its custom_id when usable.
    Blankness is checked only when parsing fails: the hot path parses once and copies nothing."""
    try:
        item = parse_json(line)
    except ValueError:
        return (BLANK if not line.strip() else None), None
    custom_id = item.get("custom_id") if isinstance(item, dict) else None
    return item, custom_id if isinstance(custom_id, str) and custom_id else None


@dataclass(frozen=True, slots=True)
class BlockScan:
    """A block split in two: `decoded` lines for the columnar path, and every other non-blank
    line parsed (`parsed`: line index -> (item or None, custom_id or None))."""

    block: LineBlock
    decoded: Decoded
    parsed: dict[int, tuple[Any, str | None]]

    def readable(self) -> tuple[np.ndarray, pa.Array]:
        """Line indices of the lines with a custom_id, in order, and their custom_ids."""
        fast = self.decoded.found
        others = [(i, cid) for i, (_, cid) in self.parsed.items() if cid]
        if not others:
            return fast.lines, fast.custom_id
        lines = np.concatenate([fast.lines, np.fromiter((i for i, _ in others), np.int64)])
        ids = pa.concat_arrays([fast.custom_id, pa.array([cid for _, cid in others], pa.string())])
        order = np.argsort(lines, kind="stable")
        return lines[order], ids.take(pa.array(order))

    def unreadable(self) -> list[int]:
        """Line indices of the non-blank lines without a usable custom_id, in order."""
        return sorted(i for i, (_, cid) in self.parsed.items() if not cid)


def scan(block: LineBlock) -> BlockScan:
    """Recognize and decode what the columnar path can take; parse the rest one by one."""
    candidates = None if block.utf8 else _utf8_lines(block)
    decoded = columnar.decode(block, recognize(block, candidates))
    others = np.ones(len(block), dtype=bool)
    others[decoded.found.lines] = False
    parsed: dict[int, tuple[Any, str | None]] = {}
    for index in np.flatnonzero(others).tolist():
        item, custom_id = read_line(block.line(index))
        if item is not BLANK:
            parsed[index] = (item, custom_id)
    return BlockScan(block, decoded, parsed)


def scan_ahead(blocks: Iterable[LineBlock], ahead: int = SCAN_AHEAD) -> Iterator[BlockScan]:
    """scan() of each block, in order, done on a helper thread up to `ahead` blocks before the
    caller uses them: reading, recognizing and decoding the next blocks overlaps writing this
    one's rows (the heavy work is in Arrow and numpy, which release the GIL)."""
    source = iter(blocks)

    def next_scan() -> BlockScan | None:
        block = next(source, None)
        return None if block is None else scan(block)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="result-scan") as pool:
        pending: deque[Future[BlockScan | None]] = deque(
            pool.submit(next_scan) for _ in range(ahead + 1)
        )
        try:
            while True:
                found = pending.popleft().result()
                if found is None:
                    return
                pending.append(pool.submit(next_scan))
                yield found
        finally:
            for future in pending:
                future.cancel()


def _utf8_lines(block: LineBlock) -> np.ndarray:
    """Indices of the lines that are valid UTF-8 (the block as a whole is not)."""
    valid = []
    for index in range(len(block)):
        try:
            block.line(index).decode("utf-8")
        except UnicodeDecodeError:
            continue
        valid.append(index)
    return np.array(valid, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class LineRow:
    """A row the per-line code made for line `line` of a block."""

    line: int
    outcome: Outcome
    custom_id: str | None
    input_line: int | None
    raw: bytes | str | Mapping[str, Any] | None


class RowMaker:
    """Adds a batch's context to rows and writes them: one at a time (`emit`), or a block's
    rows at once (`write_block`), counting results and errors by stage."""

    def __init__(self, writer: PartitionWriter, ctx: BatchContext) -> None:
        self.writer = writer
        self.ctx = ctx
        self.results = 0
        self.by_stage: Counter[str] = Counter()

    @property
    def errors(self) -> int:
        return sum(self.by_stage.values())

    def emit(
        self,
        outcome: Outcome,
        custom_id: str | None,
        input_line: int | None,
        raw: bytes | str | Mapping[str, Any] | None,
    ) -> None:
        """Write one row; `raw` (the line or item) is rendered only for error rows."""
        row = outcome.row
        structured = self.ctx.structured
        if outcome.is_result and structured is not None:
            answer, problem = structured.answer(row["response"], row["output_text"])
            if problem is not None:
                outcome = error_outcome("parse", "invalid_answer", problem, retryable=False)
                outcome.row["status_code"] = row["status_code"]
                raw = row["output_text"]
            else:
                row["output_text"] = answer
        is_result, values = self._values(outcome, custom_id, input_line, raw)
        if is_result:
            self.writer.append_result(values)
            self.results += 1
        else:
            self.writer.append_error(values)
            self.by_stage[values[ERROR_COLUMNS.index("stage")]] += 1

    def write_block(
        self,
        scan: BlockScan,
        positions: np.ndarray,
        input_line: pa.Array,
        line_rows: list[LineRow],
    ) -> None:
        """Write a block's rows in line order: the decoded lines at `positions` (indices into
        scan.decoded.found, with their input lines) and the rows the per-line code made."""
        results, errors = columnar.rows(scan.block, scan.decoded, positions, input_line, self.ctx)
        result_rows: list[tuple[Any, ...]] = []
        error_rows: list[tuple[Any, ...]] = []
        for row in line_rows:
            is_result, values = self._values(row.outcome, row.custom_id, row.input_line, row.raw)
            (result_rows if is_result else error_rows).append((*values, row.line))
        if result_rows:
            results = _in_order(results, _table(result_rows, _RESULT_ROWS))
        if error_rows:
            errors = _in_order(errors, _table(error_rows, _ERROR_ROWS))
        if self.ctx.structured is not None and results.num_rows:
            results, refused = self._answers(results)
            if refused.num_rows:
                errors = _in_order(errors, refused)
        self.writer.write_results(results.drop_columns([LINE]))
        self.writer.write_errors(errors.drop_columns([LINE]))
        self.results += results.num_rows
        if errors.num_rows:
            for entry in pc.value_counts(errors.column("stage")).to_pylist():
                self.by_stage[entry["values"]] += entry["counts"]

    def _values(
        self,
        outcome: Outcome,
        custom_id: str | None,
        input_line: int | None,
        raw: bytes | str | Mapping[str, Any] | None,
    ) -> tuple[bool, tuple[Any, ...]]:
        """The row's values in RESULT_COLUMNS or ERROR_COLUMNS order."""
        row = outcome.row
        ctx = self.ctx
        if outcome.is_result:
            prompt, completion = row["prompt_tokens"], row["completion_tokens"]
            cost = (
                ctx.price.cost(prompt or 0, completion or 0)
                if ctx.price is not None and (prompt is not None or completion is not None)
                else None
            )
            return True, (
                custom_id,
                input_line,
                ctx.batch_id,
                ctx.provider,
                ctx.model if ctx.model is not None else row["model"],
                ctx.endpoint if ctx.endpoint is not None else row["endpoint"],
                row["status_code"],
                row["request_id"],
                row["output_text"],
                row["finish_reason"],
                row["embedding"],
                row["prompt_tokens"],
                row["completion_tokens"],
                row["total_tokens"],
                row["cached_tokens"],
                row["reasoning_tokens"],
                cost,
                row["body"],
            )
        return False, (
            custom_id,
            input_line,
            ctx.batch_id,
            ctx.provider,
            row["stage"],
            row["status_code"],
            row["error_code"],
            row["error_message"],
            row["retryable"],
            raw_text(raw),
        )

    def _answers(self, results: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The structured answers of a block's results: the valid ones replace output_text, the
        others become `parse` error rows (raw: the answer text)."""
        structured = self.ctx.structured
        assert structured is not None
        answers: list[str | None] = []
        refused: list[tuple[Any, ...]] = []
        keep = []
        columns = results.select(
            ["custom_id", "input_line", "status_code", "output_text", "body", LINE]
        ).to_pylist()
        for row in columns:
            body = parse_json(row["body"]) if row["body"] is not None else None
            answer, problem = structured.answer(body, row["output_text"])
            keep.append(problem is None)
            if problem is None:
                answers.append(answer)
                continue
            refused.append(
                (
                    row["custom_id"],
                    row["input_line"],
                    self.ctx.batch_id,
                    self.ctx.provider,
                    "parse",
                    row["status_code"],
                    "invalid_answer",
                    problem,
                    False,
                    raw_text(row["output_text"]),
                    row[LINE],
                )
            )
        kept = results.filter(pa.array(keep))
        index = kept.schema.get_field_index("output_text")
        kept = kept.set_column(index, "output_text", pa.array(answers, pa.string()))
        return kept, _table(refused, _ERROR_ROWS)


def raw_text(raw: bytes | str | Mapping[str, Any] | None) -> str | None:
    """The `raw` column: the line as text (invalid UTF-8 replaced, no line ending) or the item
    as JSON text."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        raw = dump_json(raw)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.rstrip("\r\n")


def _table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Row tuples (in the schema's column order) as a table; text given as bytes is decoded."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    arrays = []
    for values, one in zip(columns, schema, strict=True):
        if pa.types.is_string(one.type):
            values = tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in values)
        arrays.append(pa.array(values, type=one.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _in_order(first: pa.Table, second: pa.Table) -> pa.Table:
    """Both tables' rows, sorted by their block line."""
    both = pa.concat_tables([first, second])
    return both.take(pc.sort_indices(both.column(LINE)))
