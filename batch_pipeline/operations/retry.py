"""Retry waves: the requests of an input file that may succeed if asked again, as a new file.

`<name>.retry-<n>.jsonl` holds the original request lines (byte for byte) of the retryable
errors of `<name>` and flows through the pipeline as its own partition. A file's attempt and
original are read off its name, so every row can say which attempt and file it belongs to.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.ledger.layout import TABLE_SUFFIX, DataLayout, is_table
from batch_pipeline.ledger.registry import InputRegistry
from batch_pipeline.ledger.storage import DataPath, atomic_write, read_parquet

GZIP_MAGIC = b"\x1f\x8b"
_RETRY_NAME = re.compile(r"(?P<original>.+)\.retry-(?P<n>[1-9][0-9]*)")


class RetryError(BatchPipelineError):
    """No retry wave can be written; the message says why."""


def attempt_of(name: str) -> tuple[str, int]:
    """(original file name, attempt number) of a partition: `a` -> (a, 1), `a.retry-2` -> (a, 3)."""
    match = _RETRY_NAME.fullmatch(name)
    if match is None:
        return name, 1
    return match["original"], int(match["n"]) + 1


@dataclass(frozen=True)
class RetryWave:
    path: DataPath
    name: str
    attempt: int
    requests: int
    created: bool  # False when the wave existed already (it is never rewritten)


def write_retry_wave(
    layout: DataLayout, name: str, *, include_non_retryable: bool = False, max_attempts: int = 3
) -> RetryWave | None:
    """Write the next retry file of partition `name`; None when nothing is worth retrying."""
    errors_path = layout.errors_file(name)
    if not errors_path.exists():
        raise RetryError(f"{name}: not collected yet, so there are no errors to retry")
    table = read_parquet(errors_path, columns=["input_line", "retryable"])
    lines = {
        line
        for line, retryable in zip(
            table.column("input_line").to_pylist(),
            table.column("retryable").to_pylist(),
            strict=True,
        )
        if line is not None and (retryable or include_non_retryable)
    }
    if not lines:
        return None
    original, attempt = attempt_of(name)
    if attempt + 1 > max_attempts:
        raise RetryError(
            f"{name}: attempt {attempt} of at most {max_attempts}; {len(lines)} request(s) stay "
            "failed (raise max_retry_attempts to go on)"
        )
    wave = f"{original}.retry-{attempt}"
    source = InputRegistry(layout).source(name)  # the content taken, whatever the inbox holds
    if is_table(source):
        target = layout.inbox / f"{wave}{TABLE_SUFFIX}"
        if not target.exists():
            _write_table_rows(source, lines, target)
            sidecar = layout.template_file(name)
            if sidecar.exists():  # the wave's rows take the same template
                with atomic_write(layout.template_file(wave)) as out:
                    out.write(sidecar.read_bytes())
            return RetryWave(target, wave, attempt + 1, len(lines), created=True)
        return RetryWave(target, wave, attempt + 1, len(lines), created=False)
    target = layout.inbox / f"{wave}.jsonl"
    if target.exists():
        return RetryWave(target, wave, attempt + 1, len(lines), created=False)
    with source.open("rb") as raw_in, atomic_write(target) as out:
        compressed = raw_in.read(2) == GZIP_MAGIC  # by content, as the input layer reads it
        raw_in.seek(0)
        lines_in = gzip.GzipFile(fileobj=raw_in) if compressed else raw_in
        for number, raw in enumerate(lines_in, start=1):
            if number in lines:
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
    return RetryWave(target, wave, attempt + 1, len(lines), created=True)


def _write_table_rows(source: DataPath, rows: set[int], target: DataPath) -> None:
    """The table's rows whose (1-based) numbers are in `rows`, in order, as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batch_pipeline.inputs.table import open_table

    table = open_table(source)
    with atomic_write(target) as out, pq.ParquetWriter(out, table.schema) as writer:
        first = 1
        for batch in table.to_batches():
            wanted = [i for i in range(batch.num_rows) if first + i in rows]
            if wanted:
                writer.write_batch(batch.take(pa.array(wanted, type=pa.int64())))
            first += batch.num_rows
