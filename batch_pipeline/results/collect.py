"""Turn provider output into rows: per batch with a completeness guarantee, or file by file.

`BatchCollector` writes exactly one row per expected request of a batch (results, errors, or a
synthesized `expired`/`canceled`/`batch`/`missing` error in `finish`), which is the invariant the
collect asset checks. `results_to_parquet` is the gateway-free conversion: one row per line.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from batch_pipeline.providers import PROVIDERS
from batch_pipeline.results.blocks import LineBlock, blocks_of_lines, read_blocks
from batch_pipeline.results.context import BatchContext
from batch_pipeline.results.normalize import (
    Outcome,
    classify_item,
    dump_json,
    error_outcome,
    recover_custom_id,
)
from batch_pipeline.results.rows import BlockScan, LineRow, RowMaker, raw_text, scan_ahead
from batch_pipeline.results.writer import PartitionWriter, WriterStats

UNPARSEABLE_REFS_KEPT = 5
_POSITIONAL_ID = re.compile(r"request-(\d{1,9})")


class CollectStats(BaseModel):
    """How one batch's output was accounted for; results + errors == expected after finish()."""

    model_config = ConfigDict(frozen=True)

    batch_id: str | None
    expected: int
    seen: int
    results: int
    errors: int
    duplicates_ignored: int
    unknown_ids_ignored: int
    unparseable_lines: int
    unparseable_refs: list[str]
    by_stage: dict[str, int]


class BatchCollector:
    """Collects one batch's provider output into a PartitionWriter, one row per expected request.

    `expected` maps each custom_id submitted in this batch to its 1-based input line. Lines for
    other custom_ids are ignored, repeats of a custom_id already written are ignored, and
    `finish` writes an error row for every expected request the output did not account for.
    """

    def __init__(
        self, writer: PartitionWriter, ctx: BatchContext, expected: Mapping[str, int]
    ) -> None:
        self._rows = RowMaker(writer, ctx)
        self._ctx = ctx
        self._expected = expected
        self._ids = pa.array(list(expected), pa.string())
        traits = PROVIDERS.get(ctx.provider or "")
        self._positional = traits is not None and traits.positional_ids
        self._lines = np.fromiter(expected.values(), dtype=np.int64, count=len(expected))
        self._seen = np.zeros(len(expected), dtype=bool)
        self._slots: dict[str, int] | None = None  # custom_id -> index, built when first needed
        # Requests known only from an unreadable line: written in finish() unless a readable
        # line for them turns up first (a truncated copy must not hide a real result).
        self._pending_parse: dict[str, tuple[Outcome, str | None]] = {}
        self._duplicates = 0
        self._unknown = 0
        self._unparseable = 0
        self._unparseable_refs: list[str] = []
        self._finished = False

    def add_lines(self, lines: Iterable[bytes | str], *, source: str) -> None:
        """Add the lines of an OpenAI output or error file (or /results items, one per line);
        `source` names the file in messages."""
        self.add_blocks(blocks_of_lines(lines), source=source)

    def add_blocks(self, blocks: Iterable[LineBlock], *, source: str) -> None:
        """add_lines for lines already read in blocks (blocks.read_blocks)."""
        self._check_open()
        for found in scan_ahead(blocks):
            self._add_block(found, source)

    def _add_block(self, found: BlockScan, source: str) -> None:
        block = found.block
        lines, ids = found.readable()
        slots = pc.fill_null(pc.index_in(ids, value_set=self._ids), -1).to_numpy()
        known = slots >= 0
        self._unknown += int((~known).sum())
        claimed = np.zeros(len(slots), dtype=bool)
        known_at = np.flatnonzero(known)
        _, first = np.unique(slots[known_at], return_index=True)
        firsts = known_at[first]
        claimed[firsts[~self._seen[slots[firsts]]]] = True
        self._duplicates += int(known.sum() - claimed.sum())
        seen_before = self._seen.copy() if found.unreadable() else None
        self._seen[slots[claimed]] = True
        claimed_ids = ids.filter(pa.array(claimed)).to_pylist() if self._pending_parse else []
        for custom_id in claimed_ids:
            if self._pending_parse.pop(custom_id, None) is not None:
                self._duplicates += 1  # the unreadable copy is dropped for this readable one
        if seen_before is not None:
            claim_line = dict(zip(slots[claimed].tolist(), lines[claimed].tolist(), strict=True))
            for index in found.unreadable():
                ref = f"{source}:{block.first_number + index}"
                self._add_unreadable(block.line(index), ref, seen_before, claim_line)
        claimed_lines = lines[claimed]
        fast = found.decoded.found.lines
        is_fast = np.isin(claimed_lines, fast)
        positions = np.searchsorted(fast, claimed_lines[is_fast])
        input_line = pa.array(self._lines[slots[claimed][is_fast]], pa.int64())
        line_rows = []
        for index, slot in zip(
            claimed_lines[~is_fast].tolist(), slots[claimed][~is_fast].tolist(), strict=True
        ):
            item, custom_id = found.parsed[index]
            line = block.line(index)
            row = LineRow(index, classify_item(item, line), custom_id, int(self._lines[slot]), line)
            line_rows.append(row)
        self._rows.write_block(found, positions, input_line, line_rows)

    def add_items(self, items: Iterable[Mapping[str, Any] | BaseModel]) -> None:
        """Add Bifrost `/results` items: BatchResultItem dicts, or the gateway's pydantic
        BatchResultItem models (dumped as received)."""
        self._check_open()
        for index, entry in enumerate(items, 1):
            item = (
                entry.model_dump(mode="json", exclude_unset=True)
                if isinstance(entry, BaseModel)
                else entry
            )
            custom_id = item.get("custom_id") if isinstance(item, Mapping) else None
            if isinstance(custom_id, str) and custom_id:
                custom_id = self._by_position(custom_id)
                input_line = self._claim(custom_id)
                if input_line is not None:
                    self._rows.emit(classify_item(item), custom_id, input_line, item)
            else:
                self._add_unreadable(dump_json(item), f"results item {index}")

    def finish(
        self,
        *,
        status: str,
        batch_errors: Sequence[Mapping[str, Any]] = (),
        lost: str | None = None,
    ) -> CollectStats:
        """Write one error row for each expected request not yet seen, by the batch's final
        status (or, when part of its output could not be had, `lost` saying why: a `missing`
        row whatever the status), and return how the batch was accounted for."""
        self._check_open()
        self._finished = True
        for custom_id, (outcome, raw) in self._pending_parse.items():
            self._seen[self._slot(custom_id)] = True
            self._rows.emit(outcome, custom_id, self._expected[custom_id], raw)
        unseen = np.flatnonzero(~self._seen)
        if len(unseen):
            template = self._missing_outcome(status, batch_errors, lost)
            ids = self._ids.take(pa.array(unseen)).to_pylist()
            missing = sorted(zip(self._lines[unseen].tolist(), ids, strict=True))
            for input_line, custom_id in missing:
                outcome = Outcome(False, dict(template.row))
                self._rows.emit(outcome, custom_id, input_line, None)
        return CollectStats(
            batch_id=self._ctx.batch_id,
            expected=len(self._expected),
            seen=int(self._seen.sum()),
            results=self._rows.results,
            errors=self._rows.errors,
            duplicates_ignored=self._duplicates,
            unknown_ids_ignored=self._unknown,
            unparseable_lines=self._unparseable,
            unparseable_refs=list(self._unparseable_refs),
            by_stage=dict(self._rows.by_stage),
        )

    def _slot(self, custom_id: str) -> int:
        """Where an expected custom_id sits in this collector's arrays."""
        if self._slots is None:
            self._slots = {cid: slot for slot, cid in enumerate(self._expected)}
        return self._slots[custom_id]

    def _by_position(self, custom_id: str) -> str:
        """The expected id a positional `request-<n>` names (Gemini items whose key Bifrost
        could not read: n counts the batch's requests from 0 in submission order)."""
        if custom_id in self._expected or not self._positional:
            return custom_id
        match = _POSITIONAL_ID.fullmatch(custom_id)
        if match is None or int(match.group(1)) >= len(self._ids):
            return custom_id
        return str(self._ids[int(match.group(1))])

    def _claim(self, custom_id: str) -> int | None:
        """The input line of an expected custom_id seen for the first time; None (and counted)
        for unknown ids and repeats."""
        input_line = self._expected.get(custom_id)
        if input_line is None:
            self._unknown += 1
            return None
        slot = self._slot(custom_id)
        if self._seen[slot]:
            self._duplicates += 1
            return None
        if self._pending_parse.pop(custom_id, None) is not None:
            self._duplicates += 1  # the unreadable copy is dropped for this readable one
        self._seen[slot] = True
        return input_line

    def _add_unreadable(
        self,
        line: bytes | str,
        ref: str,
        seen_before: np.ndarray | None = None,
        claim_line: dict[int, int] | None = None,
    ) -> None:
        """A line that is not JSON or has no custom_id: a parse row when its custom_id can still
        be read from the text, else only counted (finish() then reports the request missing).

        Within a block (given the seen state before it and the line each id was claimed at
        in it), a readable line after this one wins over it as well, as if read in order."""
        custom_id = recover_custom_id(line)
        if custom_id is None:
            self._unparseable += 1
            if len(self._unparseable_refs) < UNPARSEABLE_REFS_KEPT:
                self._unparseable_refs.append(ref)
            return
        if custom_id not in self._expected:
            self._unknown += 1
            return
        slot = self._slot(custom_id)
        seen = self._seen if seen_before is None else seen_before
        claimed_here = None if claim_line is None else claim_line.get(slot)
        if seen[slot] or custom_id in self._pending_parse or claimed_here is not None:
            self._duplicates += 1  # before or after its readable copy, one row: the readable
        else:
            message = f"{ref}: result line is not a valid JSON object with a custom_id"
            outcome = error_outcome("parse", "unparseable_line", message, retryable=True)
            self._pending_parse[custom_id] = (outcome, raw_text(line))

    def _missing_outcome(
        self, status: str, batch_errors: Sequence[Mapping[str, Any]], lost: str | None = None
    ) -> Outcome:
        """The error row every unaccounted request of a batch gets, by the batch's status."""
        if lost is not None and status != "failed":
            message = f"batch ended {status!r} but {lost}: its result for this request was lost"
            return error_outcome("missing", "output_unavailable", message, retryable=True)
        if status == "expired":
            return error_outcome(
                "expired",
                "batch_expired",
                "request not processed before the batch expired",
                retryable=True,
            )
        if status in ("cancelled", "canceled"):
            return error_outcome(
                "canceled",
                "batch_cancelled",
                "request not processed before the batch was cancelled",
                retryable=True,
            )
        if status == "failed":
            code, message = _batch_failure(batch_errors)
            return error_outcome("batch", code, message, retryable=False)
        message = f"batch ended {status!r} without a result for this request"
        if self._unparseable:
            refs = ", ".join(self._unparseable_refs)
            message += (
                f"; {self._unparseable} result line(s) could not be read and may hold it"
                f" (first: {refs})"
            )
        return error_outcome("missing", "missing_result", message, retryable=True)

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("BatchCollector.finish() was already called")


def _batch_failure(batch_errors: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Code and message of a failed batch from its `errors.data` entries."""
    codes: list[str] = []
    messages: list[str] = []
    for error in batch_errors:
        code = error.get("code")
        message = error.get("message")
        line = error.get("line")
        if code and str(code) not in codes:
            codes.append(str(code))
        text = f"{code}: {message}" if code and message else str(message or code or "")
        if line is not None:
            text += f" (line {line})"
        if text:
            messages.append(text)
    return (
        ",".join(codes) or "batch_failed",
        "; ".join(messages) or "the batch failed without an error message",
    )


class _LineConverter:
    """results_to_parquet's row maker: every non-blank line becomes exactly one row."""

    def __init__(self, writer: PartitionWriter, provider: str | None):
        self._rows = RowMaker(writer, BatchContext(batch_id=None, provider=provider))

    def add_blocks(self, blocks: Iterable[LineBlock], source: str) -> None:
        for found in scan_ahead(blocks):
            block = found.block
            line_rows = []
            for index, (item, custom_id) in sorted(found.parsed.items()):
                line = block.line(index)
                if custom_id:
                    line_rows.append(
                        LineRow(index, classify_item(item, line), custom_id, None, line)
                    )
                    continue
                if item is None:
                    reason = "not valid JSON"
                elif isinstance(item, dict):
                    reason = "no custom_id"
                else:
                    reason = "not a JSON object"
                number = block.first_number + index
                outcome = error_outcome(
                    "parse", "unparseable_line", f"{source}:{number}: {reason}", retryable=True
                )
                line_rows.append(LineRow(index, outcome, recover_custom_id(line), None, line))
            count = len(found.decoded.found)
            self._rows.write_block(found, np.arange(count), pa.nulls(count, pa.int64()), line_rows)


def results_to_parquet(
    output_jsonl: Path,
    error_jsonl: Path | None,
    out_dir: Path,
    *,
    provider: str | None = None,
    collected_at: datetime | None = None,
) -> WriterStats:
    """Convert provider result files (OpenAI output/error lines or Bifrost /results items, one
    per line; `.gz` allowed) to out_dir/results.parquet and out_dir/errors.parquet."""
    paths = [Path(output_jsonl)] + ([Path(error_jsonl)] if error_jsonl is not None else [])
    out = Path(out_dir)
    with PartitionWriter(
        out / "results.parquet",
        out / "errors.parquet",
        collected_at=collected_at or datetime.now(UTC),
    ) as writer:
        converter = _LineConverter(writer, provider)
        for path in paths:
            with _open_lines(path) as handle:
                converter.add_blocks(read_blocks(handle), str(path))
    return writer.stats


def _open_lines(path: Path) -> IO[bytes]:
    """Open a JSONL file for binary line reading, transparently gunzipping `.gz`."""
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb", buffering=0)
