"""PartitionWriter: typed tables, bounded batches, atomic publication, validation."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from results_helpers import read_rows

from batch_pipeline.results import ERRORS_SCHEMA, RESULTS_SCHEMA, PartitionWriter


def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "results" / "part-0.parquet", tmp_path / "errors" / "part-0.parquet"


def test_empty_tables_are_written_with_the_full_schema(
    tmp_path: Path, collected_at: datetime
) -> None:
    results, errors = paths(tmp_path)
    with PartitionWriter(results, errors, collected_at=collected_at) as writer:
        pass
    assert pq.read_schema(results).remove_metadata() == RESULTS_SCHEMA
    assert pq.read_schema(errors).remove_metadata() == ERRORS_SCHEMA
    assert pq.read_table(results).num_rows == 0
    assert duckdb.sql(f"select count(*) from read_parquet('{errors}')").fetchall() == [(0,)]
    assert pl.read_parquet(results).columns == RESULTS_SCHEMA.names
    assert writer.stats.results_rows == 0
    assert writer.stats.errors_by_stage == {}


def test_keyword_rows_fill_missing_columns_with_null_and_stamp_the_partition_columns(
    tmp_path: Path, collected_at: datetime
) -> None:
    results, errors = paths(tmp_path)
    with PartitionWriter(
        results, errors, collected_at=collected_at, original_file="reviews", attempt=2
    ) as writer:
        writer.add_result(custom_id="a", input_line=3, embedding=[0.5, 1.0], prompt_tokens=7)
        writer.add_result(custom_id="b", total_tokens=2, completion_tokens=1)
        writer.add_error(custom_id="c", stage="input", retryable=False, error_message="bad line")
    rows = read_rows(results)
    assert rows[0]["custom_id"] == "a"
    assert rows[0]["input_line"] == 3
    assert rows[0]["embedding"] == [0.5, 1.0]
    assert rows[0]["body"] is None
    assert rows[0]["collected_at"] == collected_at
    assert {(r["original_file"], r["attempt"]) for r in rows} == {("reviews", 2)}
    assert read_rows(errors) == [
        {
            "custom_id": "c",
            "input_line": None,
            "batch_id": None,
            "provider": None,
            "stage": "input",
            "status_code": None,
            "error_code": None,
            "error_message": "bad line",
            "retryable": False,
            "raw": None,
            "original_file": "reviews",
            "attempt": 2,
            "collected_at": collected_at,
        }
    ]
    stats = writer.stats
    assert (stats.results_rows, stats.errors_rows) == (2, 1)
    assert (stats.prompt_tokens, stats.completion_tokens, stats.total_tokens) == (7, 1, 2)
    assert stats.errors_by_stage == {"input": 1}


def test_rows_are_flushed_in_bounded_record_batches(tmp_path: Path, collected_at: datetime) -> None:
    results, errors = paths(tmp_path)
    with PartitionWriter(results, errors, collected_at=collected_at, rows_per_batch=2) as writer:
        for index in range(5):
            writer.add_result(custom_id=f"r{index}", body="{}")
    metadata = pq.ParquetFile(results).metadata
    assert metadata.num_rows == 5
    assert metadata.num_row_groups == 3
    assert [row["custom_id"] for row in read_rows(results)] == [f"r{i}" for i in range(5)]


def test_large_rows_flush_by_bytes_before_the_row_limit(
    tmp_path: Path, collected_at: datetime
) -> None:
    results, errors = paths(tmp_path)
    body = '"' + "x" * 1000 + '"'
    with PartitionWriter(
        results, errors, collected_at=collected_at, max_batch_bytes=2500
    ) as writer:
        for index in range(6):
            writer.add_result(custom_id=f"r{index}", body=body)
        writer.add_result(custom_id="vec", embedding=[0.0] * 100)
        writer.add_result(custom_id="small")
    metadata = pq.ParquetFile(results).metadata
    # 3 bodies of 1002 bytes pass 2500 bytes; the 100-value embedding counts ~3200 on its own.
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [3, 3, 1, 1]


def test_an_exception_publishes_nothing_and_leaves_no_temp_file(
    tmp_path: Path, collected_at: datetime
) -> None:
    results, errors = paths(tmp_path)
    with (
        pytest.raises(RuntimeError, match="collect failed"),
        PartitionWriter(results, errors, collected_at=collected_at, rows_per_batch=1) as writer,
    ):
        writer.add_result(custom_id="a", body="{}")
        writer.add_error(custom_id="b", stage="request", retryable=True)
        raise RuntimeError("collect failed")
    assert not results.exists()
    assert not errors.exists()
    assert os.listdir(results.parent) == []
    assert os.listdir(errors.parent) == []


def test_a_bad_value_fails_the_whole_write_and_keeps_the_previous_files(
    tmp_path: Path, collected_at: datetime
) -> None:
    results, errors = paths(tmp_path)
    with PartitionWriter(results, errors, collected_at=collected_at) as writer:
        writer.add_result(custom_id="old")
    with (
        pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)),
        PartitionWriter(results, errors, collected_at=collected_at) as writer,
    ):
        writer.add_result(custom_id="new", status_code="two hundred")
    assert [row["custom_id"] for row in read_rows(results)] == ["old"]
    assert sorted(os.listdir(results.parent)) == ["part-0.parquet"]


def test_readers_see_the_old_file_until_the_new_one_is_complete(
    tmp_path: Path, collected_at: datetime
) -> None:
    results, errors = paths(tmp_path)
    with PartitionWriter(results, errors, collected_at=collected_at) as writer:
        writer.add_result(custom_id="v1")
    with PartitionWriter(results, errors, collected_at=collected_at, rows_per_batch=1) as writer:
        for index in range(3):
            writer.add_result(custom_id=f"v2-{index}")
        # Batches are already on disk in the temp file; the published file is still v1.
        hidden = [name for name in os.listdir(results.parent) if name.startswith(".")]
        assert len(hidden) == 1 and hidden[0].endswith(".tmp")
        assert [row["custom_id"] for row in read_rows(results)] == ["v1"]
        assert pl.read_parquet(results.parent / "*.parquet")["custom_id"].to_list() == ["v1"]
    assert [row["custom_id"] for row in read_rows(results)] == ["v2-0", "v2-1", "v2-2"]
    assert os.listdir(results.parent) == ["part-0.parquet"]


def test_files_get_ordinary_permissions(tmp_path: Path, collected_at: datetime) -> None:
    results, errors = paths(tmp_path)
    umask = os.umask(0o022)
    try:
        with PartitionWriter(results, errors, collected_at=collected_at):
            pass
    finally:
        os.umask(umask)
    assert stat.S_IMODE(results.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("row", "error", "match"),
    [
        ({"custom_id": "a", "colour": "red"}, TypeError, "unknown errors column"),
        ({"custom_id": "a", "stage": "later", "retryable": True}, ValueError, "stage must be"),
        ({"custom_id": "a", "stage": "request"}, ValueError, "retryable"),
        ({"custom_id": "a", "stage": "request", "retryable": 1}, ValueError, "retryable"),
        ({"stage": "parse", "retryable": True, "collected_at": None}, TypeError, "collected_at"),
    ],
)
def test_invalid_error_rows_are_refused(
    tmp_path: Path, collected_at: datetime, row: dict, error: type[Exception], match: str
) -> None:
    results, errors = paths(tmp_path)
    with (
        PartitionWriter(results, errors, collected_at=collected_at) as writer,
        pytest.raises(error, match=match),
    ):
        writer.add_error(**row)
    assert pq.read_table(errors).num_rows == 0


def test_unknown_result_columns_are_refused(tmp_path: Path, collected_at: datetime) -> None:
    with (
        PartitionWriter(*paths(tmp_path), collected_at=collected_at) as writer,
        pytest.raises(TypeError, match="unknown results column"),
    ):
        writer.add_result(custom_id="a", output="typo")


def test_naive_collected_at_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PartitionWriter(*paths(tmp_path), collected_at=datetime(2025, 1, 1))


def test_writing_outside_the_with_block_is_refused(tmp_path: Path, collected_at: datetime) -> None:
    writer = PartitionWriter(*paths(tmp_path), collected_at=collected_at)
    with pytest.raises(RuntimeError, match="with"):
        writer.add_result(custom_id="a")


def test_invalid_utf8_text_never_reaches_a_file(tmp_path: Path, collected_at: datetime) -> None:
    results, errors = paths(tmp_path)
    with (
        pytest.raises(pa.ArrowInvalid, match=r"(?i)utf-?8"),
        PartitionWriter(results, errors, collected_at=collected_at) as writer,
    ):
        writer.add_result(custom_id="a", body=b'{"text": "\xff"}')
    assert not results.exists()


def test_text_column_keeps_nulls_and_mixed_str_and_bytes(
    tmp_path: Path, collected_at: datetime
) -> None:
    results, errors = paths(tmp_path)
    with PartitionWriter(results, errors, collected_at=collected_at) as writer:
        writer.add_error(custom_id="a", stage="missing", retryable=True)
        writer.add_error(custom_id="b", stage="parse", retryable=True, raw="naïve {")
        writer.add_error(custom_id="c", stage="parse", retryable=True, raw=b"\xe6\x9d\xb1")
        writer.add_error(custom_id="d", stage="parse", retryable=True, raw="")
    assert [row["raw"] for row in read_rows(errors)] == [None, "naïve {", "東", ""]
