"""A table input's results and errors, completed: the key and passthrough columns of each row
(from keys.parquet, joined by row number, with their source types) and, for a template with a
response_format, one typed column per top-level property of the answer.

DuckDB does it out of core (a join and json_transform over Parquet), so memory stays bounded
whatever the table's size; rows come out in row order.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from batch_pipeline.ledger.storage import DataPath, is_local
from batch_pipeline.results.schema import ERRORS_SCHEMA, RESULTS_SCHEMA
from batch_pipeline.results.structured import StructuredOutput

MEMORY_LIMIT = "512MB"
BATCH_ROWS = 64_000
_LINE = "input_line"


def reserved_columns(keys: list[str]) -> set[str]:
    """Names a typed answer column may not take: the results' own columns and the keys'."""
    return {*RESULTS_SCHEMA.names, *ERRORS_SCHEMA.names, *keys, "input_file"}


def enrich(
    results: Path, errors: Path, keys: DataPath, structured: StructuredOutput | None
) -> None:
    """Rewrite the finished `results` and `errors` files (local temp files) in place."""
    import duckdb

    with duckdb.connect() as db, tempfile.TemporaryDirectory(prefix="bp-enrich-") as spill:
        db.execute(f"set memory_limit = '{MEMORY_LIMIT}'")
        db.execute(f"set temp_directory = {_quote(spill)}")
        if not is_local(keys):
            db.register_filesystem(keys.fs)
        source = str(keys) if is_local(keys) else f"{keys.protocol}://{keys.path}"
        _rewrite(db, results, _query(results, source, structured), RESULTS_SCHEMA)
        _rewrite(db, errors, _query(errors, source, None), ERRORS_SCHEMA)


def _query(table: Path, keys: str, structured: StructuredOutput | None) -> str:
    """The table joined with its rows' keys (and its answers typed), in row order."""
    joined = (
        # (hive_partitioning off: the temp file sits in an input_file=<name> folder)
        f"select r.*, k.* exclude ({_LINE}) "
        f"from read_parquet({_quote(table)}, hive_partitioning = false) r "
        f"left join read_parquet({_quote(keys)}, hive_partitioning = false) k using ({_LINE})"
    )
    if structured is None:
        return f"{joined} order by {_LINE}"
    shape = _quote(orjson.dumps(structured.structure()).decode())
    typed = ", ".join(f"a.{_name(c)} as {_name(c)}" for c in structured.columns())
    answers = f"select q.*, json_transform(q.output_text, {shape}) as a from ({joined}) q"
    return f"select * exclude (a), {typed} from ({answers}) order by {_LINE}"


def _rewrite(db: Any, path: Path, query: str, base: pa.Schema) -> None:
    """Replace `path` by what `query` returns, streamed through Arrow: the base columns keep
    their own types, and every column stays nullable (DuckDB would mark a column that happens
    to hold no null as required, and partitions would then disagree)."""
    import pyarrow.parquet as pq

    reader = db.sql(query).to_arrow_reader(BATCH_ROWS)
    fields = [base.field(f.name) if f.name in base.names else f for f in reader.schema]
    schema = pa.schema([f.with_nullable(True) for f in fields])
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with pq.ParquetWriter(name, schema, compression="snappy") as out:
            for batch in reader:
                out.write_batch(batch.cast(schema))
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def _quote(value: str | os.PathLike[str]) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
