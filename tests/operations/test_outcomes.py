from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.operations.outcomes import build_outcomes
from batch_pipeline.operations.retry import attempt_of
from batch_pipeline.results import PartitionWriter
from batch_pipeline.results.schema import OUTCOMES_SCHEMA


def _write(layout: DataLayout, name: str, ok: list[str], failed: list[str]) -> None:
    original, attempt = attempt_of(name)
    with PartitionWriter(
        layout.results_file(name),
        layout.errors_file(name),
        collected_at=datetime.now(UTC),
        original_file=original,
        attempt=attempt,
    ) as w:
        for i, cid in enumerate(ok, 1):
            w.add_result(custom_id=cid, input_line=i, output_text=f"{cid}@{attempt}")
        for i, cid in enumerate(failed, len(ok) + 1):
            w.add_error(
                custom_id=cid,
                input_line=i,
                stage="expired",
                retryable=True,
                error_message=f"try {attempt}",
            )


def test_latest_success_else_latest_error(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    _write(layout, "a", ok=["x"], failed=["y", "z"])
    _write(layout, "a.retry-1", ok=["y"], failed=["z"])
    _write(layout, "b", ok=["x"], failed=[])
    _write(layout, "ab", ok=["x"], failed=[])  # a name starting like `a`: not an attempt of it
    built = build_outcomes(layout, "a")
    assert (built.rows, built.attempts) == (3, ["a", "a.retry-1"])
    rows = duckdb.sql(
        f"select custom_id, outcome, attempt, input_file, output_text, error_message "
        f"from read_parquet('{built.path}') order by custom_id"
    ).fetchall()
    assert rows == [
        ("x", "succeeded", 1, "a", "x@1", None),
        ("y", "succeeded", 2, "a.retry-1", "y@2", None),
        ("z", "failed", 2, "a.retry-1", None, "try 2"),
    ]
    # a new attempt: its original's outcomes are built again from every attempt; nothing else
    _write(layout, "a.retry-2", ok=["z"], failed=[])
    assert build_outcomes(layout, "a").attempts == ["a", "a.retry-1", "a.retry-2"]
    assert not (tmp_path / "outcomes" / "original_file=b").exists()
    assert build_outcomes(layout, "b").rows == 1
    hive = duckdb.sql(
        f"select original_file, count(*), count(*) filter (where outcome = 'succeeded') "
        f"from read_parquet('{tmp_path}/outcomes/*/*.parquet', hive_partitioning=true) group by 1 order by 1"
    ).fetchall()
    assert hive == [("a", 3, 3), ("b", 1, 1)]
    # the view's columns are the declared ones (what a reader gets before any collect, too)
    schema = pq.read_schema(built.path)
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in OUTCOMES_SCHEMA]


def test_an_attempt_with_only_one_table_written_is_left_out(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    _write(layout, "c", ok=["x"], failed=["y"])
    _write(layout, "c.retry-1", ok=["y"], failed=[])
    layout.errors_file("c.retry-1").unlink()  # a collect that did not finish
    built = build_outcomes(layout, "c")
    assert built.attempts == ["c"] and built.rows == 2
