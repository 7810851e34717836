"""Stream rows into the results and errors Parquet files of one partition, published atomically.

Rows are buffered as value tuples and flushed as one Arrow record batch (one Parquet row group)
every `rows_per_batch` rows or `max_batch_bytes` of buffered text, so memory stays bounded whatever
the size of the output. Parquet encoding and compression run on one background thread (they
release the GIL) while the next batch is parsed; at most one batch per table is in flight. Both
files are written to hidden temp files next to their targets and renamed over them only when the
whole collect succeeded.
"""

from __future__ import annotations

import array
import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from batch_pipeline.ledger.storage import DataPath, publish, scratch_for
from batch_pipeline.results.schema import (
    COLLECTED_AT_TYPE,
    ERROR_COLUMNS,
    ERROR_STAGES,
    ERRORS_SCHEMA,
    RESULT_COLUMNS,
    RESULTS_SCHEMA,
)

# Only these columns repeat enough to gain from dictionary encoding; trying it on bodies,
# ids and messages costs time for nothing.
_DICTIONARY_COLUMNS = [
    "batch_id",
    "provider",
    "model",
    "endpoint",
    "finish_reason",
    "stage",
    "error_code",
    "status_code",
]
# Memory a buffered embedding value costs: a Python float plus its list slot.
_BYTES_PER_EMBEDDING_VALUE = 32
_PROMPT, _COMPLETION, _TOTAL = (
    RESULT_COLUMNS.index(name) for name in ("prompt_tokens", "completion_tokens", "total_tokens")
)
_STAGE = ERROR_COLUMNS.index("stage")


class WriterStats(BaseModel):
    """What a PartitionWriter has written so far."""

    model_config = ConfigDict(frozen=True)

    results_rows: int = 0
    errors_rows: int = 0
    errors_by_stage: dict[str, int] = {}
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _TextBuffer:
    """A string column kept as one UTF-8 byte buffer plus offsets.

    Used for the bulkiest column of each table (body, raw): no Python object stays alive per row
    (thousands of retained bodies fragmented the heap to several times their size) and the
    Arrow array is built from the buffers without converting value by value.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self._offsets = array.array("i", [0])
        self._null_rows: list[int] = []

    def append(self, value: bytes | str | None) -> None:
        if value is None:
            self._null_rows.append(len(self._offsets) - 1)
        else:
            self.data += value.encode() if isinstance(value, str) else value
        self._offsets.append(len(self.data))

    def to_array(self) -> pa.Array:
        """The values as a validated Arrow string array (the buffers are shared, not copied)."""
        count = len(self._offsets) - 1
        validity = None
        if self._null_rows:
            valid = [True] * count
            for row in self._null_rows:
                valid[row] = False
            validity = pa.array(valid, type=pa.bool_()).buffers()[1]
        values = pa.Array.from_buffers(
            pa.string(),
            count,
            [validity, pa.py_buffer(self._offsets), pa.py_buffer(self.data)],
            null_count=len(self._null_rows),
        )
        values.validate(full=True)  # rejects invalid UTF-8 before it reaches a file
        return values


class _TableSink:
    """Buffered rows plus a ParquetWriter on a temp file, for one table.

    Rows arrive as value tuples in `columns` order; the last column is the table's bulkiest
    (body, raw) and goes to a _TextBuffer, whose size bounds the batch.
    """

    def __init__(
        self,
        target: DataPath,
        schema: pa.Schema,
        columns: tuple[str, ...],
        rows_per_batch: int,
        max_bytes: int,
    ):
        self.target = target
        self.schema = schema
        self._types = [schema.field(name).type for name in columns[:-1]]
        self._embedding_index = columns.index("embedding") if "embedding" in columns else None
        self._rows_per_batch = rows_per_batch
        self._max_bytes = max_bytes
        self._rows: list[tuple[Any, ...]] = []
        self._text = _TextBuffer()
        self._embedding_bytes = 0
        self._constants: tuple[pa.Scalar, ...] = ()
        self.rows = 0
        self.tmp: Path | None = None
        self._scratch = contextlib.ExitStack()  # holds the temp file's folder until publish
        self._writer: pq.ParquetWriter | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def open(self, constants: tuple[pa.Scalar, ...], executor: ThreadPoolExecutor) -> None:
        """Start the temp file; `constants` are the partition columns' values, in order."""
        self._constants = constants
        self._executor = executor
        # Hidden and not *.parquet, so dataset readers globbing the folder never pick it up;
        # created with mode 0o666 so the umask applies as for any other output file. An S3
        # target gets its temp file in a private local folder and one PUT at publish.
        folder = self._scratch.enter_context(scratch_for(self.target))
        tmp = folder / f".{self.target.name}.{uuid.uuid4().hex}.tmp"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self.tmp = tmp
        self._writer = pq.ParquetWriter(
            str(tmp),
            self.schema,
            compression="snappy",
            use_dictionary=[n for n in _DICTIONARY_COLUMNS if n in self.schema.names],
        )

    def append(self, values: tuple[Any, ...]) -> None:
        """Buffer one row (values in `columns` order); flush when the batch is full."""
        self._text.append(values[-1])
        self._rows.append(values[:-1])  # drops the tuple holding the text: the buffer has it
        self.rows += 1
        if self._embedding_index is not None:
            vector = values[self._embedding_index]
            if vector is not None:
                self._embedding_bytes += len(vector) * _BYTES_PER_EMBEDDING_VALUE
        if (
            len(self._rows) >= self._rows_per_batch
            or len(self._text.data) + self._embedding_bytes >= self._max_bytes
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one record batch (a Parquet row group)."""
        if not self._rows or self._writer is None or self._executor is None:
            return
        arrays = [
            pa.array(values, type=type_)
            for values, type_ in zip(zip(*self._rows, strict=True), self._types, strict=True)
        ]
        arrays.append(self._text.to_array())
        self._rows.clear()
        self._text = _TextBuffer()  # the batch still references the old buffer's memory
        self._embedding_bytes = 0
        self._write(arrays)

    def append_table(self, table: pa.Table) -> None:
        """Write rows given as columns (`columns` order, maybe more columns after them), after
        the rows buffered so far, in record batches of at most `rows_per_batch` rows."""
        self.flush()
        self.rows += table.num_rows
        for start in range(0, table.num_rows, self._rows_per_batch):
            part = table.slice(start, self._rows_per_batch)
            columns = (part.column(i) for i in range(len(self._types) + 1))
            self._write([c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in columns])

    def _write(self, arrays: list[pa.Array]) -> None:
        """Hand one batch (the row columns; the partition columns are added) to the writer
        thread, once the batch before it is written."""
        assert self._writer is not None and self._executor is not None
        count = len(arrays[0])
        arrays = [*arrays, *(pa.repeat(value, count) for value in self._constants)]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self._wait()
        self._pending = self._executor.submit(self._writer.write_batch, batch)

    def _wait(self) -> None:
        """Wait for the batch in flight; re-raises its write error here, in the caller."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Flush what is left and finish the Parquet footer."""
        self.flush()
        self._wait()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def publish(self) -> None:
        """Make the finished temp file the target in one step (rename, or one PUT on S3)."""
        if self.tmp is not None:
            publish(self.tmp, self.target)
            self.tmp = None
        self._scratch.close()

    def discard(self) -> None:
        """Drop everything written so far; the target is left as it was."""
        self._rows.clear()
        self._text = _TextBuffer()
        # The temp file is deleted next, so a failed write or footer does not matter.
        with contextlib.suppress(Exception):
            self._wait()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
        self._scratch.close()


class PartitionWriter:
    """Writes one partition's results and errors Parquet files in one collect run.

    Use as a context manager: on a clean exit both files are published atomically (a reader sees
    the old file or the complete new one, never half a file); on an exception nothing is
    published and no temp file is left behind. Empty tables are written with the full schema.
    """

    def __init__(
        self,
        results_path: DataPath,
        errors_path: DataPath,
        *,
        collected_at: datetime,
        original_file: str | None = None,
        attempt: int | None = None,
        rows_per_batch: int = 10_000,
        max_batch_bytes: int = 8 * 1024 * 1024,
        complete: Callable[[Path, Path], None] | None = None,
    ) -> None:
        """`complete(results, errors)` may rewrite both finished files (local temp files) in
        place before they are published: a table input's keys and typed answers."""
        if collected_at.tzinfo is None:
            raise ValueError("collected_at must be timezone-aware (UTC)")
        if rows_per_batch < 1 or max_batch_bytes < 1:
            raise ValueError("rows_per_batch and max_batch_bytes must be positive")
        self.collected_at = collected_at.astimezone(UTC)
        self._constants = (
            pa.scalar(original_file, pa.string()),
            pa.scalar(attempt, pa.int32()),
            pa.scalar(self.collected_at, COLLECTED_AT_TYPE),
        )
        self._results = _TableSink(
            results_path, RESULTS_SCHEMA, RESULT_COLUMNS, rows_per_batch, max_batch_bytes
        )
        self._errors = _TableSink(
            errors_path, ERRORS_SCHEMA, ERROR_COLUMNS, rows_per_batch, max_batch_bytes
        )
        self._open = False
        self._complete = complete
        self._executor: ThreadPoolExecutor | None = None
        self._errors_by_stage: Counter[str] = Counter()
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._total_tokens = 0

    def __enter__(self) -> PartitionWriter:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        try:
            self._results.open(self._constants, self._executor)
            self._errors.open(self._constants, self._executor)
        except BaseException:
            self._abort()
            raise
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        if exc_type is not None:
            self._abort()
            return
        try:
            self._results.close()
            self._errors.close()
            self._shutdown()
            if self._complete is not None:
                assert self._results.tmp is not None and self._errors.tmp is not None
                self._complete(self._results.tmp, self._errors.tmp)
            self._results.publish()
            self._errors.publish()
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        self._results.discard()
        self._errors.discard()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def add_result(self, **row: Any) -> None:
        """Add one results row given as keyword columns; missing columns are null."""
        _check_columns(row, RESULT_COLUMNS, "results")
        self.append_result(tuple(row.get(name) for name in RESULT_COLUMNS))

    def add_error(self, **row: Any) -> None:
        """Add one errors row given as keyword columns; `stage` and `retryable` are required."""
        _check_columns(row, ERROR_COLUMNS, "errors")
        if row.get("stage") not in ERROR_STAGES:
            raise ValueError(
                f"stage must be one of {', '.join(ERROR_STAGES)}, not {row.get('stage')!r}"
            )
        if not isinstance(row.get("retryable"), bool):
            raise ValueError("retryable must be True or False")
        self.append_error(tuple(row.get(name) for name in ERROR_COLUMNS))

    def append_result(self, values: tuple[Any, ...]) -> None:
        """add_result for the hot path: one value per RESULT_COLUMNS entry, in that order."""
        if not self._open:
            raise RuntimeError("PartitionWriter used outside its `with` block")
        self._results.append(values)
        tokens = values[_PROMPT]
        if tokens is not None:
            self._prompt_tokens += tokens
        tokens = values[_COMPLETION]
        if tokens is not None:
            self._completion_tokens += tokens
        tokens = values[_TOTAL]
        if tokens is not None:
            self._total_tokens += tokens

    def append_error(self, values: tuple[Any, ...]) -> None:
        """add_error for the hot path: one value per ERROR_COLUMNS entry, stage already valid."""
        if not self._open:
            raise RuntimeError("PartitionWriter used outside its `with` block")
        self._errors.append(values)
        self._errors_by_stage[values[_STAGE]] += 1

    def write_results(self, table: pa.Table) -> None:
        """Add results rows given as a table whose first columns are RESULT_COLUMNS."""
        if not self._open:
            raise RuntimeError("PartitionWriter used outside its `with` block")
        if not table.num_rows:
            return
        self._results.append_table(table)
        self._prompt_tokens += _total(table.column("prompt_tokens"))
        self._completion_tokens += _total(table.column("completion_tokens"))
        self._total_tokens += _total(table.column("total_tokens"))

    def write_errors(self, table: pa.Table) -> None:
        """Add errors rows given as a table whose first columns are ERROR_COLUMNS, stages
        already valid."""
        if not self._open:
            raise RuntimeError("PartitionWriter used outside its `with` block")
        if not table.num_rows:
            return
        self._errors.append_table(table)
        for entry in pc.value_counts(table.column("stage")).to_pylist():
            self._errors_by_stage[entry["values"]] += entry["counts"]

    @property
    def stats(self) -> WriterStats:
        """Counts and token sums of the rows added so far."""
        return WriterStats(
            results_rows=self._results.rows,
            errors_rows=self._errors.rows,
            errors_by_stage=dict(self._errors_by_stage),
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            total_tokens=self._total_tokens,
        )


def _total(column: pa.ChunkedArray) -> int:
    """Sum of an integer column, nulls skipped (0 for none)."""
    return int(pc.sum(column).as_py() or 0)


def _check_columns(row: dict[str, Any], names: tuple[str, ...], table: str) -> None:
    unknown = row.keys() - set(names)
    if unknown:
        raise TypeError(f"unknown {table} column(s): {', '.join(sorted(unknown))}")
