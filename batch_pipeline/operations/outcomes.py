"""The outcomes view: one row per (original input file, custom_id) with its final outcome
across every attempt: the latest success, else the latest error.

Built with DuckDB straight from the results and errors Parquet (on disk or, through fsspec, on
S3), so it streams and spills to local disk past MEMORY_LIMIT instead of holding a file's rows in
memory. On disk an original file is rebuilt only when one of its partitions changed since its
outcomes were written; in a bucket always.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.storage import DataPath, is_local, modified_at, publish, scratch_for
from batch_pipeline.operations.retry import attempt_of

MEMORY_LIMIT = "256MB"

_QUERY = """
copy (
  select * exclude (rank) from (
    select *, row_number() over (
        partition by coalesce(custom_id, '#' || input_file || ':' || input_line::varchar)
        order by outcome = 'succeeded' desc, attempt desc, input_file desc) as rank
    from (
      select coalesce(original_file, {original}) as original_file, custom_id, 'succeeded' as outcome,
             coalesce(attempt, 1) as attempt, input_file, input_line, batch_id, provider, model,
             status_code, null::varchar as stage, null::varchar as error_code,
             null::varchar as error_message, null::boolean as retryable, output_text,
             finish_reason, total_tokens, collected_at
      from read_parquet({results}, hive_partitioning = true, union_by_name = true)
      union all
      select coalesce(original_file, {original}), custom_id, 'failed', coalesce(attempt, 1),
             input_file, input_line, batch_id, provider, null, status_code, stage, error_code,
             error_message, retryable, null, null, null, collected_at
      from read_parquet({errors}, hive_partitioning = true, union_by_name = true)
    )
  ) where rank = 1
  order by custom_id
) to {target} (format parquet)
"""


@dataclass(frozen=True)
class OutcomesFile:
    original: str
    path: DataPath
    rows: int
    rebuilt: bool


def _quote(value: str | DataPath) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _file_list(paths: Iterable[DataPath]) -> str:
    return "[" + ", ".join(_quote(p) for p in paths) + "]"


def _partitions(layout: DataLayout) -> dict[str, list[str]]:
    """Collected partitions (both tables present), grouped by original file."""
    groups: dict[str, list[str]] = defaultdict(list)
    results_root = layout.root / "results"
    if not results_root.is_dir():
        return groups
    for name in sorted(
        f.name.removeprefix("input_file=") for f in results_root.glob("input_file=*")
    ):
        if layout.results_file(name).exists() and layout.errors_file(name).exists():
            groups[attempt_of(name)[0]].append(name)
    return groups


def build_outcomes(layout: DataLayout) -> list[OutcomesFile]:
    """Write data/outcomes/original_file=<name>/part-0.parquet for every original file."""
    import duckdb

    built = []
    spill_to = layout.root / "staging" / ".duckdb" / "spill"  # on disk: beside the data
    with duckdb.connect() as db, scratch_for(spill_to) as spill:
        db.execute(f"set memory_limit = '{MEMORY_LIMIT}'")
        db.execute("set preserve_insertion_order = false")  # lets big sorts stream and spill
        db.execute(f"set temp_directory = {_quote(spill)}")
        if not is_local(layout.root):
            db.register_filesystem(layout.root.fs)
        for original, names in _partitions(layout).items():
            target = layout.root / "outcomes" / f"original_file={original}" / "part-0.parquet"
            sources = [layout.results_file(n) for n in names] + [
                layout.errors_file(n) for n in names
            ]
            # On S3, LastModified has 1 s steps and is when an upload started: rebuild always.
            fresh = (
                is_local(target)
                and target.exists()
                and modified_at(target) > max(map(modified_at, sources))
            )
            if not fresh:
                _write(db, original, names, layout, target)
            rows = db.execute(f"select count(*) from read_parquet({_quote(target)})").fetchone()[0]
            built.append(OutcomesFile(original, target, rows, rebuilt=not fresh))
    return built


def _write(db, original: str, names: list[str], layout: DataLayout, target: DataPath) -> None:
    with scratch_for(target) as scratch:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=scratch)
        os.close(fd)
        tmp = Path(name)
        try:
            db.execute(
                _QUERY.format(
                    original=_quote(original),
                    results=_file_list(layout.results_file(n) for n in names),
                    errors=_file_list(layout.errors_file(n) for n in names),
                    target=_quote(tmp),
                )
            )
            publish(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
