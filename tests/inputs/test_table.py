"""Table inputs: a Parquet file or hive folder and a template become shards, keys.parquet and
one-line row problems; any table-like value an IO manager hands over can be written as one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batch_pipeline.inputs import InputOptions
from batch_pipeline.inputs.prepare import prepare_table, validate_table
from batch_pipeline.inputs.table import (
    KEYS_FILE,
    open_table,
    table_sha256,
    write_table,
)
from batch_pipeline.inputs.template import TemplateError, custom_id_of, load_template

ROWS = pa.table(
    {
        "id": pa.array([10, 11, 12, 11, 14], pa.int32()),
        "when": pa.array([1, 2, 3, 4, None], pa.timestamp("ms")),
        "text": ["a", None, "c", "d", "e"],
        "score": [0.5, 1.5, None, 2.5, 3.5],
    }
)


def template(**fields: Any):
    return load_template(
        {"model": "openai/gpt-4o-mini", "key": "id", "prompt": "{{ text }}", **fields}
    )


def test_a_table_becomes_shards_keys_and_row_errors(tmp_path: Path) -> None:
    source = tmp_path / "t.parquet"
    pq.write_table(ROWS, source, row_group_size=2)
    plan = prepare_table(
        source, template(passthrough=["when", "score"]), tmp_path / "s", InputOptions()
    )
    assert (plan.total_lines, plan.rejected_count) == (5, 2)  # row 2 null, row 4 repeats key 11
    requests = [
        orjson.loads(line)
        for shard in plan.shards
        for line in Path(shard.path).read_bytes().splitlines()
    ]
    assert [r["custom_id"] for r in requests] == [custom_id_of((k,)) for k in (10, 12, 14)]
    assert [r["body"]["messages"][0]["content"] for r in requests] == ["a", "c", "e"]
    keys = pq.read_table(tmp_path / "s" / KEYS_FILE)
    # the key and passthrough columns keep their source types, by row number
    assert keys.schema.names == ["input_line", "id", "when", "score"]
    assert keys.schema.field("id").type == pa.int32()
    assert keys.schema.field("when").type == pa.timestamp("ms")
    assert keys.column("input_line").to_pylist() == [1, 2, 3, 4, 5]
    rejected = [orjson.loads(x) for x in Path(plan.rejected_path).read_bytes().splitlines()]
    assert [(r["input_line"], r["reason"]) for r in rejected] == [
        (2, "column 'text' is null and the template needs it"),
        (4, "key: the same key as row 2"),
    ]
    # prepared again: the same plan, nothing rewritten
    again = prepare_table(
        source, template(passthrough=["when", "score"]), tmp_path / "s", InputOptions()
    )
    assert again == plan


def test_validate_names_each_bad_row_by_number_and_key(tmp_path: Path) -> None:
    source = tmp_path / "t.parquet"
    pq.write_table(ROWS, source)
    report = validate_table(source, template(), InputOptions())
    assert not report.ok and report.total_problems == 2
    assert [str(p) for p in report.problems] == [
        f"{source}: row 2 (id=11): column 'text' is null and the template needs it",
        f"{source}: row 4 (id=11): key: the same key as row 2",
    ]
    assert report.summary.lines == 5


def test_a_hive_folder_is_one_table_in_a_stable_order(tmp_path: Path) -> None:
    folder = tmp_path / "t.parquet"
    frame = pa.table({"id": [1, 2, 3, 4], "text": list("abcd"), "part": ["x", "y", "x", "y"]})
    pq.write_to_dataset(frame, folder, partition_cols=["part"])
    table = open_table(folder)
    assert sorted(table.to_table().column("id").to_pylist()) == [1, 2, 3, 4]
    assert "part" in table.schema.names  # the partition column is a column the template may use
    spec = template(prompt="{{ part }}: {{ text }}")
    first = table_sha256(folder, spec)
    assert first == table_sha256(folder, spec)
    assert first != table_sha256(folder, template(prompt="{{ text }}"))
    (folder / "part=z").mkdir()
    pq.write_table(pa.table({"id": [5], "text": ["e"]}), folder / "part=z" / "f.parquet")
    assert table_sha256(folder, spec) != first  # another file: another input


def test_an_empty_folder_and_a_missing_column_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.parquet").mkdir()
    with pytest.raises(TemplateError, match=r"empty.parquet: holds no Parquet file"):
        open_table(tmp_path / "empty.parquet")
    source = tmp_path / "t.parquet"
    pq.write_table(ROWS, source)
    with pytest.raises(TemplateError, match=r"names column\(s\) 'title'"):
        prepare_table(source, template(prompt="{{ title }}"), tmp_path / "s", InputOptions())
    assert not (tmp_path / "s").exists()  # refused before anything was written
    clash = template(
        response_format={
            "schema": {"type": "object", "properties": {"batch_id": {"type": "string"}}}
        }
    )
    with pytest.raises(TemplateError, match=r"property 'batch_id' would be a second column"):
        prepare_table(source, clash, tmp_path / "s", InputOptions())


TABLE = pa.table({"id": [1, 2, 3], "text": ["a", "b", None]})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda: TABLE, id="pyarrow.Table"),
        pytest.param(lambda: TABLE.to_pandas(), id="pandas.DataFrame"),
        pytest.param(lambda: pl.from_arrow(TABLE), id="polars.DataFrame"),
        pytest.param(lambda: pl.from_arrow(TABLE).lazy(), id="polars.LazyFrame"),
        pytest.param(lambda: ds.dataset(TABLE), id="pyarrow.Dataset"),
        pytest.param(
            lambda: pa.RecordBatchReader.from_batches(TABLE.schema, TABLE.to_batches()), id="reader"
        ),
    ],
)
def test_write_table_takes_what_io_managers_hand_over(value: Any, tmp_path: Path) -> None:
    target = tmp_path / "inbox" / "t.parquet"
    assert write_table(value(), target) == 3
    written = pq.read_table(target)
    assert written.column("id").to_pylist() == [1, 2, 3]
    assert written.column("text").to_pylist() == ["a", "b", None]
    assert [p.name for p in target.parent.iterdir()] == ["t.parquet"]  # no temp file left


def test_write_table_copies_a_parquet_path_and_refuses_anything_else(tmp_path: Path) -> None:
    source = tmp_path / "src.parquet"
    pq.write_table(TABLE, source)
    assert write_table(str(source), tmp_path / "a.parquet") == 3
    with pytest.raises(TemplateError, match=r"b.parquet: cannot make a table of a builtins.dict"):
        write_table({"id": [1]}, tmp_path / "b.parquet")
    assert not (tmp_path / "b.parquet").exists()
    empty = pd.DataFrame({"id": pd.Series([], dtype="int64")})
    assert write_table(empty, tmp_path / "c.parquet") == 0
    assert pq.read_table(tmp_path / "c.parquet").schema.names == ["id"]
