"""Downstream assets of the user's own take an instance's results, errors and outcomes as
inputs and get the collected rows in the type they annotate: all partitions for an unpartitioned
downstream, its own for a same-partitioned one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml
from driver_support import NAME, settings
from pipeline_support import chat_lines, write_input

from batch_pipeline import build_pipeline_defs
from batch_pipeline.integration.driver import PipelineDriver
from batch_pipeline.integration.names import PipelineNames
from batch_pipeline.results.schema import RESULTS_SCHEMA

NAMES = PipelineNames(NAME)
FILES = dg.DynamicPartitionsDefinition(name=NAMES.partitions)  # the instance's own partitions


def _seen(rows: Any, column: str = "input_file") -> dg.MaterializeResult:
    """What a downstream asset received: its type, row count and partitions."""
    frame = pl.from_arrow(rows) if isinstance(rows, pa.Table) else rows
    if isinstance(frame, pd.DataFrame):
        frame = pl.from_pandas(frame)
    if isinstance(frame, ds.Dataset):
        frame = pl.from_arrow(frame.to_table())
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    return dg.MaterializeResult(
        metadata={
            "type": type(rows).__module__.split(".")[0] + "." + type(rows).__name__,
            "rows": len(frame),
            "files": ",".join(sorted(set(frame[column].to_list()))),
            "columns": ",".join(frame.columns),
        }
    )


def downstream_assets() -> list[dg.AssetsDefinition]:
    results = dg.AssetIn(key=NAMES.batch_results)

    @dg.asset(ins={"rows": results})
    def as_pandas(rows: pd.DataFrame) -> dg.MaterializeResult:
        return _seen(rows)

    @dg.asset(ins={"rows": results})
    def as_arrow(rows: pa.Table) -> dg.MaterializeResult:
        return _seen(rows)

    @dg.asset(ins={"rows": results})
    def as_polars(rows: pl.DataFrame) -> dg.MaterializeResult:
        return _seen(rows)

    @dg.asset(ins={"rows": results})
    def as_lazy(rows: pl.LazyFrame) -> dg.MaterializeResult:
        return _seen(rows)

    @dg.asset(ins={"rows": results})
    def as_dataset(rows: ds.Dataset) -> dg.MaterializeResult:
        return _seen(rows)

    @dg.asset(ins={"rows": dg.AssetIn(key=NAMES.batch_errors)})
    def failed(rows: pd.DataFrame) -> dg.MaterializeResult:
        return _seen(rows)

    @dg.asset(ins={"rows": dg.AssetIn(key=NAMES.batch_outcomes)})
    def outcomes(rows: pl.DataFrame) -> dg.MaterializeResult:
        return _seen(rows, "original_file")

    @dg.asset(ins={"rows": results}, partitions_def=FILES)
    def per_file(rows: pd.DataFrame) -> dg.MaterializeResult:
        return _seen(rows)

    return [as_pandas, as_arrow, as_polars, as_lazy, as_dataset, failed, outcomes, per_file]


@pytest.fixture
def drive(emulator, instance, tmp_path: Path) -> PipelineDriver:
    assets = downstream_assets()
    unpartitioned = [a for a in assets if a.partitions_def is None]
    defs = dg.Definitions.merge(
        build_pipeline_defs(settings(emulator.base_url, tmp_path)),
        dg.Definitions(
            assets=assets,
            jobs=[
                dg.define_asset_job(
                    "downstream", unpartitioned, executor_def=dg.in_process_executor
                ),
                dg.define_asset_job(
                    "per_file_job",
                    [assets[-1]],
                    partitions_def=FILES,
                    executor_def=dg.in_process_executor,
                ),
            ],
        ),
    )
    return PipelineDriver(defs, NAME, instance, log_level="CRITICAL")


def _received(drive: PipelineDriver, job: str, partition: str | None = None) -> dict[str, Any]:
    outcome = drive.execute(job, partition)
    assert outcome.success, outcome.message
    return outcome.materializations


def test_downstream_assets_receive_the_rows_in_their_type(drive, tmp_path: Path) -> None:
    before = _received(drive, "downstream")  # nothing collected yet: empty, with the columns
    assert before["as_pandas"]["rows"] == 0
    assert before["as_arrow"]["columns"].split(",") == [*RESULTS_SCHEMA.names, "input_file"]

    write_input(tmp_path, "first", chat_lines(5, fail={2: 400}))
    write_input(tmp_path, "second", chat_lines(3))
    summary = drive.run(
        sorted((tmp_path / "inbox").glob("*.jsonl")), poll_interval=0.1, progress=lambda _: None
    )
    assert summary.ok, summary.render()

    seen = _received(drive, "downstream")
    expected_types = {
        "as_pandas": "pandas.DataFrame",
        "as_arrow": "pyarrow.Table",
        "as_polars": "polars.DataFrame",
        "as_lazy": "polars.LazyFrame",
        "as_dataset": "pyarrow.FileSystemDataset",
    }
    for asset, kind in expected_types.items():
        assert (seen[asset]["type"], seen[asset]["rows"], seen[asset]["files"]) == (
            kind,
            7,
            "first,second",
        ), asset
    assert (seen["failed"]["rows"], seen["failed"]["files"]) == (1, "first")
    assert (seen["outcomes"]["rows"], seen["outcomes"]["files"]) == (8, "first,second")
    # a same-partitioned downstream reads its own partition only
    mine = _received(drive, "per_file_job", "second")["per_file"]
    assert (mine["rows"], mine["files"]) == (3, "second")


def test_partitions_of_different_templates_are_read_together(drive, tmp_path: Path) -> None:
    """A JSONL partition and a table partition (with key and answer columns) in one frame."""
    write_input(tmp_path, "plain", chat_lines(2))
    table = tmp_path / "inbox" / "labelled.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"]}), table)
    template = tmp_path / "t.yaml"
    template.write_text(
        yaml.safe_dump(
            {
                "model": "openai/gpt-4o-mini",
                "key": "id",
                "prompt": "{{ text }}",
                "response_format": {
                    "schema": {"type": "object", "properties": {"label": {"type": "string"}}}
                },
            }
        )
    )
    summary = drive.run(
        [tmp_path / "inbox" / "plain.jsonl", table],
        template=template,
        poll_interval=0.1,
        progress=lambda _: None,
    )
    assert summary.ok, summary.render()
    seen = _received(drive, "downstream")["as_polars"]
    assert (seen["rows"], seen["files"]) == (5, "labelled,plain")
    assert {"id", "label", "input_file"} <= set(seen["columns"].split(","))
