"""Tables in: a Parquet file or folder (hive partitions allowed) plus a request template become
the same validated, content-addressed shards as a JSONL file, one request per row.

Rows are read in record batches (only the columns the template names), rendered into a
requests file in the work folder (one line per row, so a row's number is its line number), and
that file goes through the JSONL scan with the skip policy: a row that cannot be rendered, a
request over a provider limit or a repeated key becomes an `input` error carrying its key. The
key and passthrough columns, with their source types, go to keys.parquet beside the shards; a
collect joins them to results and errors by row number. Memory stays bounded by a record batch.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from batch_pipeline.inputs.models import InputOptions
from batch_pipeline.inputs.template import RequestTemplate, TemplateError, custom_id_of
from batch_pipeline.ledger.storage import DataPath, atomic_write, is_local

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds

KEYS_FILE = "keys.parquet"
REQUESTS_FILE = "requests.jsonl"  # the rendered rows, in the work folder only
ROW_LINE = "input_line"  # the row number column of keys.parquet, as in results and errors
BATCH_ROWS = 8192  # rows read, rendered and written at a time
# A table is read one record batch ahead, one file at a time: Arrow's defaults (16 batches,
# 4 files ahead) hold hundreds of MB of a wide table for no gain, since rendering is the
# bottleneck.
SCAN_OPTIONS: dict[str, Any] = {
    "batch_size": BATCH_ROWS,
    "batch_readahead": 1,
    "fragment_readahead": 1,
}
WRITE_BYTES = 4 << 20
ROW_ERROR = "row_error"  # a requests-file line that stands for a row that did not render
_DUPLICATE = re.compile(r"^custom_id: duplicate '[^']*', also used on line (\d+)$")


@dataclass
class Rendering:
    """What rendering a table wrote, and how many rows did not render."""

    rows: int = 0
    failed: int = 0
    key_schema: list[tuple[str, str]] = field(default_factory=list)  # (column, Arrow type)


def open_table(source: DataPath) -> ds.Dataset:
    """A Parquet file or a folder of them (hive partitions allowed), files in a stable order."""
    import pyarrow.dataset as ds

    filesystem, root = _filesystem(source)
    if (is_local(source) and Path(source).is_file()) or (not is_local(source) and source.is_file()):
        return ds.dataset(root, filesystem=filesystem, format="parquet")
    files = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive").files
    if not files:
        raise TemplateError(f"{source}: holds no Parquet file")
    return ds.dataset(
        sorted(files),
        filesystem=filesystem,
        format="parquet",
        partitioning=ds.partitioning(flavor="hive"),
        partition_base_dir=root,
    )


def table_sha256(source: DataPath, template: RequestTemplate) -> str:
    """The identity of a table input: its template and every byte of its files, in order."""
    table = open_table(source)
    filesystem, root = _filesystem(source)
    digest = hashlib.sha256(template.fingerprint().encode())
    for path in table.files:
        digest.update(path.removeprefix(root).encode() + b"\0")
        with filesystem.open_input_stream(path) as data:
            while block := data.read(4 << 20):
                digest.update(block)
    return digest.hexdigest()


def check_table(source: DataPath, template: RequestTemplate) -> ds.Dataset:
    """The table, once the template is known to read only columns it has, and its answer's
    columns not to clash with the outputs' own (one line if not)."""
    from batch_pipeline.results.enrich import reserved_columns

    table = open_table(source)
    template.check_columns(table.schema.names, str(source))
    fmt = template.response_format
    taken = reserved_columns([*template.keys, *template.passthrough])
    clash = [name for name in (fmt.schema_["properties"] if fmt else ()) if name in taken]
    if clash:
        raise TemplateError(
            f"{source}: response_format property {clash[0]!r} would be a second column of that "
            "name in the results (a results column, a key or a passthrough column); rename it"
        )
    return table


def render_table(
    table: ds.Dataset, template: RequestTemplate, requests: Path, keys: Path
) -> Rendering:
    """Write one request line per row to `requests` and the key and passthrough columns, with
    the row number, to `keys`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kept = list(dict.fromkeys([*template.keys, *template.passthrough]))
    key_schema = pa.schema([pa.field(ROW_LINE, pa.int64()), *(table.schema.field(c) for c in kept)])
    rendering = Rendering(key_schema=[(f.name, str(f.type)) for f in key_schema][1:])
    needed = template.required()
    with open(requests, "wb") as out, pq.ParquetWriter(keys, key_schema) as key_writer:
        pending: list[bytes] = []
        size = 0
        for batch in table.to_batches(columns=template.columns(), **SCAN_OPTIONS):
            first = rendering.rows + 1
            for row in batch.to_pylist():
                rendering.rows += 1
                line, rendered = _render_row(template, row, needed)
                rendering.failed += not rendered
                pending.append(line)
                size += len(line)
            lines = pa.array(range(first, rendering.rows + 1), type=pa.int64())
            key_writer.write_batch(
                pa.record_batch([lines, *(batch.column(c) for c in kept)], schema=key_schema)
            )
            if size >= WRITE_BYTES:
                out.write(b"".join(pending))
                pending, size = [], 0
        out.write(b"".join(pending))
    return rendering


def _render_row(
    template: RequestTemplate, row: dict[str, Any], needed: list[str]
) -> tuple[bytes, bool]:
    """The request line of a row (True), or a row_error line saying why it has none (False)."""
    custom_id = custom_id_of(tuple(row[c] for c in template.keys))
    try:
        nulls = [c for c in needed if row[c] is None]
        if nulls:
            raise ValueError(f"column {nulls[0]!r} is null and the template needs it")
        return orjson.dumps(template.line(custom_id, template.render(row))) + b"\n", True
    except (ValueError, TypeError) as exc:
        shown = {c: row[c] for c in template.columns()}
        error = {"custom_id": custom_id, ROW_ERROR: str(exc), "row": shown}
        return orjson.dumps(error, default=str) + b"\n", False


def row_reasons(sink: Any) -> Any:
    """Wrap a reject sink of the JSONL scan so a table's rejects read as rows: the render
    failure's own reason and the row's values, a repeated key named as such."""

    def reject(line: int, custom_id: str | None, reason: str, raw: bytes, truncated: bool) -> None:
        if ROW_ERROR.encode() in raw and not truncated:
            try:
                stand_in = orjson.loads(raw)
            except orjson.JSONDecodeError:
                stand_in = None
            if isinstance(stand_in, dict) and ROW_ERROR in stand_in:
                raw = orjson.dumps(stand_in.get("row"), default=str)
                sink(line, custom_id, str(stand_in[ROW_ERROR]), raw, truncated)
                return
        duplicate = _DUPLICATE.match(reason)
        if duplicate:
            reason = f"key: the same key as row {duplicate.group(1)}"
        sink(line, custom_id, reason, raw, truncated)

    return reject


def row_keys(keys: DataPath, columns: list[str], lines: list[int]) -> list[str]:
    """`column=value` text of the key `columns` of each of `lines` (rows), from keys.parquet."""
    import pyarrow.parquet as pq

    if not lines:
        return []
    table = pq.read_table(keys, columns=[ROW_LINE, *columns], filters=[(ROW_LINE, "in", lines)])
    by_line = {
        row[ROW_LINE]: ", ".join(f"{n}={row[n]!r}" for n in columns) for row in table.to_pylist()
    }
    return [by_line.get(line, "?") for line in lines]


def write_table(value: Any, target: DataPath) -> int:
    """Write a table-like value as one Parquet file at `target`, atomically; its row count.

    Takes what IO managers hand over: a pyarrow Table, RecordBatchReader or Dataset, a pandas
    or polars DataFrame, a polars LazyFrame, or the path of a Parquet file or folder. Readers,
    datasets and lazy frames are streamed a record batch at a time.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    batches = _record_batches(value, pa, ds)
    if batches is None:
        raise TemplateError(
            f"{target.name}: cannot make a table of a {type(value).__module__}."
            f"{type(value).__qualname__} (a pyarrow Table or Dataset, a pandas or polars "
            "DataFrame, or a Parquet path)"
        )
    schema, stream = batches
    rows = 0
    with atomic_write(target) as out, pq.ParquetWriter(out, schema) as writer:
        for batch in stream:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _record_batches(value: Any, pa: Any, ds: Any) -> tuple[pa.Schema, Iterator[Any]] | None:
    """The schema and record batches of a table-like value, or None for anything else."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, str | os.PathLike):
        value = open_table(Path(value))
    elif kind.startswith("pandas") and kind.endswith("DataFrame"):
        value = pa.Table.from_pandas(value, preserve_index=False)
    elif kind.startswith("polars") and kind.endswith("DataFrame"):
        value = value.to_arrow()
    elif kind.startswith("polars") and kind.endswith("LazyFrame"):
        import polars as pl

        schema = pl.DataFrame(schema=value.collect_schema()).to_arrow().schema
        frames = value.collect_batches()
        return schema, (b for f in frames for b in f.to_arrow().cast(schema).to_batches())
    if isinstance(value, pa.Table):
        return value.schema, iter(value.to_batches(max_chunksize=BATCH_ROWS))
    if isinstance(value, pa.RecordBatchReader):
        return value.schema, iter(value)
    if isinstance(value, ds.Dataset):
        return value.schema, value.to_batches(batch_size=BATCH_ROWS)
    return None


def _filesystem(source: DataPath) -> tuple[pa.fs.FileSystem, str]:
    """A pyarrow filesystem for the source and the source's path on it."""
    import pyarrow.fs as pafs

    if is_local(source):
        return pafs.LocalFileSystem(), str(Path(source).resolve())
    return pafs.PyFileSystem(pafs.FSSpecHandler(source.fs)), source.path


def table_options(options: InputOptions) -> InputOptions:
    """A table's rows that fail are input errors, never a rejected file."""
    return options.model_copy(update={"on_invalid": "skip"})
