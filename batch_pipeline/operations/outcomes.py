"""The outcomes view: one row per (original input file, custom_id) with its final outcome
across every attempt: the latest success, else the latest error.

Built with DuckDB straight from the results and errors Parquet (on disk or, through fsspec, on
S3), so it streams and spills to local disk past MEMORY_LIMIT instead of holding a file's rows in
memory. A collect rebuilds the outcomes of its own original file only (its attempts are found by
name, so nothing else is listed or read), one builder at a time per original.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batch_pipeline.ledger.layout import DataLayout, check_name
from batch_pipeline.ledger.storage import (
    DataPath,
    is_local,
    list_names,
    lock,
    parquet_schema,
    publish,
    scratch_for,
)
from batch_pipeline.operations.retry import attempt_of
from batch_pipeline.results.schema import ERRORS_SCHEMA, RESULTS_SCHEMA

if TYPE_CHECKING:
    import duckdb

MEMORY_LIMIT = "256MB"

# Which row wins is decided on a narrow read (the key, the attempt and where the row sits);
# only the winners' wide rows are then read: ranking whole rows would sort every output text
# through the memory limit. (input_file, input_line) names one row: each input line of an
# attempt is in exactly one of its results or errors.
_QUERY = """
copy (
  with winners as (
    select input_file, input_line from (
      select input_file, input_line, row_number() over (
          partition by coalesce(custom_id, '#' || input_file || ':' || input_line::varchar)
          order by succeeded desc, coalesce(attempt, 1) desc, input_file desc) as rank
      from (
        select custom_id, attempt, input_file, input_line, true as succeeded
        from read_parquet({results}, hive_partitioning = true, union_by_name = true)
        union all
        select custom_id, attempt, input_file, input_line, false as succeeded
        from read_parquet({errors}, hive_partitioning = true, union_by_name = true)
      )
    ) where rank = 1
  )
  select * from (
    select coalesce(original_file, {original}) as original_file, custom_id, 'succeeded' as outcome,
           coalesce(attempt, 1) as attempt, input_file, input_line, batch_id, provider, model,
           status_code, null::varchar as stage, null::varchar as error_code,
           null::varchar as error_message, null::boolean as retryable, output_text,
           finish_reason, total_tokens, collected_at{results_extra}
    from read_parquet({results}, hive_partitioning = true, union_by_name = true)
    union all by name
    select coalesce(original_file, {original}) as original_file, custom_id, 'failed' as outcome,
           coalesce(attempt, 1) as attempt, input_file, input_line, batch_id, provider,
           null::varchar as model, status_code, stage, error_code, error_message, retryable,
           null::varchar as output_text, null::varchar as finish_reason,
           null::bigint as total_tokens, collected_at{errors_extra}
    from read_parquet({errors}, hive_partitioning = true, union_by_name = true)
  ) semi join winners using (input_file, input_line)
) to {target} (format parquet)
"""


@dataclass(frozen=True)
class OutcomesFile:
    original: str
    path: DataPath
    rows: int
    attempts: list[str]  # the partitions it was built from


def _extra(files: list[DataPath], base: list[str]) -> str:
    """`, "col", ...` for the columns a table input added (keys, passthrough, typed answers),
    read from the files' schemas, so the outcomes carry them too."""
    names: dict[str, None] = {}
    for path in files:
        names.update(dict.fromkeys(parquet_schema(path).names))
    return "".join(f', "{n}"' for n in names if n not in base)


def _quote(value: str | DataPath) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _file_list(paths: Iterable[DataPath]) -> str:
    return "[" + ", ".join(_quote(p) for p in paths) + "]"


def attempts_of(layout: DataLayout, original: str) -> list[str]:
    """The collected partitions of an original file: itself and its retry waves whose results
    and errors are both written, in attempt order."""
    listed = list_names(
        layout.root / "results", folders=True, prefix=f"input_file={check_name(original)}"
    )  # only this original's folders (and its name's extensions), never every file's
    names = [name.removeprefix("input_file=") for name, _ in listed]
    mine = [n for n in names if attempt_of(n)[0] == original]
    return sorted(
        (n for n in mine if layout.results_file(n).exists() and layout.errors_file(n).exists()),
        key=lambda n: attempt_of(n)[1],
    )


def outcomes_file(layout: DataLayout, original: str) -> DataPath:
    return layout.root / "outcomes" / f"original_file={check_name(original)}" / "part-0.parquet"


def build_outcomes(layout: DataLayout, original: str) -> OutcomesFile:
    """Write outcomes/original_file=<original>/part-0.parquet from every collected attempt."""
    import duckdb

    target = outcomes_file(layout, original)
    spill_to = layout.root / "staging" / ".duckdb" / "spill"  # on disk: beside the data
    with (
        lock(layout.root / "batches" / f".{check_name(original)}.outcomes.lock"),
        duckdb.connect() as db,
        scratch_for(spill_to) as spill,
    ):
        db.execute(f"set memory_limit = '{MEMORY_LIMIT}'")
        db.execute("set preserve_insertion_order = false")  # lets big sorts stream and spill
        db.execute(f"set temp_directory = {_quote(spill)}")
        if not is_local(layout.root):
            db.register_filesystem(layout.root.fs)
        names = attempts_of(layout, original)
        _write(db, original, names, layout, target)
        query = f"select count(*) from read_parquet({_quote(target)})"
        (rows,) = db.execute(query).fetchone() or (0,)
    return OutcomesFile(original, target, int(rows), names)


def _write(
    db: duckdb.DuckDBPyConnection,
    original: str,
    names: list[str],
    layout: DataLayout,
    target: DataPath,
) -> None:
    with scratch_for(target) as scratch:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=scratch)
        os.close(fd)
        tmp = Path(name)
        try:
            results = [layout.results_file(n) for n in names]
            errors = [layout.errors_file(n) for n in names]
            db.execute(
                _QUERY.format(
                    original=_quote(original),
                    results=_file_list(results),
                    errors=_file_list(errors),
                    results_extra=_extra(results, RESULTS_SCHEMA.names),
                    errors_extra=_extra(errors, ERRORS_SCHEMA.names),
                    target=_quote(tmp),
                )
            )
            publish(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
