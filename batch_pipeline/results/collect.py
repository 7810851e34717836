"""Turn provider output into rows: per batch with a completeness guarantee, or file by file.

`BatchCollector` writes exactly one row per expected request of a batch (results, errors, or a
synthesized `expired`/`canceled`/`batch`/`missing` error in `finish`), which is the invariant the
collect asset checks. `results_to_parquet` is the gateway-free conversion: one row per line.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from pydantic import BaseModel, ConfigDict

from batch_pipeline.prices import Price
from batch_pipeline.results.normalize import (
    Outcome,
    classify_item,
    dump_json,
    error_outcome,
    parse_json,
    recover_custom_id,
)
from batch_pipeline.results.structured import StructuredOutput
from batch_pipeline.results.writer import PartitionWriter, WriterStats

UNPARSEABLE_REFS_KEPT = 5


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What the rows of one batch share; None where it is not known (e.g. no gateway).

    `price` prices each result's tokens (cost_usd); `structured` checks each result's answer
    against a template's response_format (a bad one becomes a `parse` error).
    """

    batch_id: str | None
    provider: str | None
    model: str | None = None
    endpoint: str | None = None
    price: Price | None = None
    structured: StructuredOutput | None = None


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


class _RowEmitter:
    """Adds the batch context to classified outcomes and hands them to the writer."""

    def __init__(self, writer: PartitionWriter, ctx: BatchContext):
        self.writer = writer
        self.ctx = ctx
        self.results = 0
        self.by_stage: Counter[str] = Counter()

    def emit(
        self,
        outcome: Outcome,
        custom_id: str | None,
        input_line: int | None,
        raw: bytes | str | Mapping[str, Any] | None,
    ) -> None:
        """Write one row; `raw` (the line or item) is rendered only for error rows."""
        row = outcome.row
        ctx = self.ctx
        if outcome.is_result and ctx.structured is not None:
            answer, problem = ctx.structured.answer(row["response"], row["output_text"])
            if problem is not None:
                outcome = error_outcome("parse", "invalid_answer", problem, retryable=False)
                outcome.row["status_code"] = row["status_code"]
                raw, row = row["output_text"], outcome.row
            else:
                row["output_text"] = answer
        if outcome.is_result:
            prompt, completion = row["prompt_tokens"], row["completion_tokens"]
            cost = (
                ctx.price.cost(prompt or 0, completion or 0)
                if ctx.price is not None and (prompt is not None or completion is not None)
                else None
            )
            self.writer.append_result(
                (
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
            )
            self.results += 1
        else:
            self.writer.append_error(
                (
                    custom_id,
                    input_line,
                    ctx.batch_id,
                    ctx.provider,
                    row["stage"],
                    row["status_code"],
                    row["error_code"],
                    row["error_message"],
                    row["retryable"],
                    _raw_text(raw),
                )
            )
            self.by_stage[row["stage"]] += 1

    @property
    def errors(self) -> int:
        return sum(self.by_stage.values())


def _raw_text(raw: bytes | str | Mapping[str, Any] | None) -> str | None:
    """The `raw` column: the line as text (invalid UTF-8 replaced, no line ending) or the item
    as JSON text."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        raw = dump_json(raw)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.rstrip("\r\n")


class BatchCollector:
    """Collects one batch's provider output into a PartitionWriter, one row per expected request.

    `expected` maps each custom_id submitted in this batch to its 1-based input line. Lines for
    other custom_ids are ignored, repeats of a custom_id already written are ignored, and
    `finish` writes an error row for every expected request the output did not account for.
    """

    def __init__(
        self, writer: PartitionWriter, ctx: BatchContext, expected: Mapping[str, int]
    ) -> None:
        self._emitter = _RowEmitter(writer, ctx)
        self._ctx = ctx
        self._expected = expected
        self._seen: set[str] = set()
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
        self._check_open()
        for number, line in enumerate(lines, 1):
            item, custom_id = _read_line(line)
            if item is _BLANK:
                continue
            if custom_id:
                input_line = self._claim(custom_id)
                if input_line is not None:
                    self._emitter.emit(classify_item(item), custom_id, input_line, line)
            else:
                self._add_unreadable(line, f"{source}:{number}")

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
                input_line = self._claim(custom_id)
                if input_line is not None:
                    self._emitter.emit(classify_item(item), custom_id, input_line, item)
            else:
                self._add_unreadable(dump_json(item), f"results item {index}")

    def finish(
        self, *, status: str, batch_errors: Sequence[Mapping[str, Any]] = ()
    ) -> CollectStats:
        """Write one error row for each expected request not yet seen, by the batch's final
        status, and return how the batch was accounted for."""
        self._check_open()
        self._finished = True
        for custom_id, (outcome, raw) in self._pending_parse.items():
            self._seen.add(custom_id)
            self._emitter.emit(outcome, custom_id, self._expected[custom_id], raw)
        missing = sorted(
            (line, cid) for cid, line in self._expected.items() if cid not in self._seen
        )
        if missing:
            template = self._missing_outcome(status, batch_errors)
            for input_line, custom_id in missing:
                outcome = Outcome(False, dict(template.row))
                self._emitter.emit(outcome, custom_id, input_line, None)
        return CollectStats(
            batch_id=self._ctx.batch_id,
            expected=len(self._expected),
            seen=len(self._seen),
            results=self._emitter.results,
            errors=self._emitter.errors,
            duplicates_ignored=self._duplicates,
            unknown_ids_ignored=self._unknown,
            unparseable_lines=self._unparseable,
            unparseable_refs=list(self._unparseable_refs),
            by_stage=dict(self._emitter.by_stage),
        )

    def _claim(self, custom_id: str) -> int | None:
        """The input line of an expected custom_id seen for the first time; None (and counted)
        for unknown ids and repeats."""
        input_line = self._expected.get(custom_id)
        if input_line is None:
            self._unknown += 1
            return None
        if custom_id in self._seen:
            self._duplicates += 1
            return None
        if self._pending_parse.pop(custom_id, None) is not None:
            self._duplicates += 1  # the unreadable copy is dropped for this readable one
        self._seen.add(custom_id)
        return input_line

    def _add_unreadable(self, line: bytes | str, ref: str) -> None:
        """A line that is not JSON or has no custom_id: a parse row when its custom_id can still
        be read from the text, else only counted (finish() then reports the request missing)."""
        custom_id = recover_custom_id(line)
        if custom_id is None:
            self._unparseable += 1
            if len(self._unparseable_refs) < UNPARSEABLE_REFS_KEPT:
                self._unparseable_refs.append(ref)
            return
        if custom_id not in self._expected:
            self._unknown += 1
        elif custom_id in self._seen or custom_id in self._pending_parse:
            self._duplicates += 1
        else:
            message = f"{ref}: result line is not a valid JSON object with a custom_id"
            outcome = error_outcome("parse", "unparseable_line", message, retryable=True)
            self._pending_parse[custom_id] = (outcome, _raw_text(line))

    def _missing_outcome(self, status: str, batch_errors: Sequence[Mapping[str, Any]]) -> Outcome:
        """The error row every unaccounted request of a batch gets, by the batch's status."""
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


_BLANK = object()


def _read_line(line: bytes | str) -> tuple[Any, str | None]:
    """A result line parsed (None: not valid JSON, _BLANK: blank) and its custom_id when usable.
    Blankness is checked only when parsing fails: the hot path parses once and copies nothing."""
    try:
        item = parse_json(line)
    except ValueError:
        return (_BLANK if not line.strip() else None), None
    custom_id = item.get("custom_id") if isinstance(item, dict) else None
    return item, custom_id if isinstance(custom_id, str) and custom_id else None


class _LineConverter:
    """results_to_parquet's row maker: every non-blank line becomes exactly one row."""

    def __init__(self, writer: PartitionWriter, provider: str | None):
        self._emitter = _RowEmitter(writer, BatchContext(batch_id=None, provider=provider))

    def add_lines(self, lines: Iterable[bytes], source: str) -> None:
        emit = self._emitter.emit
        for number, line in enumerate(lines, 1):
            item, custom_id = _read_line(line)
            if item is _BLANK:
                continue
            if custom_id:
                emit(classify_item(item), custom_id, None, line)
                continue
            if item is None:
                reason = "not valid JSON"
            elif isinstance(item, dict):
                reason = "no custom_id"
            else:
                reason = "not a JSON object"
            outcome = error_outcome(
                "parse", "unparseable_line", f"{source}:{number}: {reason}", retryable=True
            )
            emit(outcome, recover_custom_id(line), None, line)


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
                converter.add_lines(handle, str(path))
    return writer.stats


def _open_lines(path: Path) -> IO[bytes]:
    """Open a JSONL file for binary line reading, transparently gunzipping `.gz`."""
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb", buffering=1024 * 1024)
