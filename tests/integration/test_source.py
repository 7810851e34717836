"""An upstream asset as the input (`source:`): each of its materializations is loaded through
its own IO manager, written into the inbox as a table, and goes the one path inbox -> submit ->
collect, keyed by the upstream's rows."""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import polars as pl
import pytest
from driver_support import NAME, poll_and_collect, settings

from batch_pipeline import build_pipeline_defs
from batch_pipeline.integration.driver import PipelineDriver
from batch_pipeline.integration.names import PipelineNames
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.integration.source import source_input_name

NAMES = PipelineNames(NAME)
TEMPLATE = {
    "model": "openai/gpt-4o-mini",
    "key": "ticket_id",
    "prompt": "Route this ticket: {{ subject }}",
    "response_format": {
        "schema": {
            "type": "object",
            "properties": {"queue": {"type": "string", "enum": ["billing", "tech", "other"]}},
            "required": ["queue"],
        }
    },
}
REGIONS = dg.StaticPartitionsDefinition(["eu", "us"])


def _tickets(n: int, region: str = "eu") -> pd.DataFrame:
    return pd.DataFrame(
        {"ticket_id": [f"{region}-{i}" for i in range(n)], "subject": [f"s{i}" for i in range(n)]}
    )


@dg.asset(key=["shop", "tickets"], config_schema={"rows": int})
def tickets(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return _tickets(context.op_execution_context.op_config["rows"])


@dg.asset(partitions_def=REGIONS, io_manager_key="polars_io")
def regional(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.from_pandas(
        _tickets(2 if context.partition_key == "eu" else 3, context.partition_key)
    )


class PolarsParquetIO(dg.ConfigurableIOManager):
    """A user's own IO manager: one Parquet file per partition."""

    base: str

    def _path(self, context: dg.InputContext | dg.OutputContext) -> Path:
        return Path(self.base) / f"{context.asset_key.path[-1]}-{context.partition_key}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        obj.write_parquet(self._path(context))

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame:
        return pl.scan_parquet(self._path(context))


def _driver(emulator: Any, instance: Any, root: Path, source: str) -> PipelineDriver:
    chosen = settings(emulator.base_url, root, {"source": source, "template": TEMPLATE})
    defs = dg.Definitions.merge(
        build_pipeline_defs(chosen),
        dg.Definitions(
            assets=[tickets, regional],
            jobs=[
                dg.define_asset_job("tickets_job", [tickets], executor_def=dg.in_process_executor),
                dg.define_asset_job(
                    "regional_job", [regional], executor_def=dg.in_process_executor
                ),
            ],
            resources={"polars_io": PolarsParquetIO(base=str(root))},
        ),
    )
    return PipelineDriver(defs, NAME, instance, log_level="CRITICAL")


def _materialize(drive: PipelineDriver, rows: int) -> None:
    config = {"ops": {"shop__tickets": {"config": {"rows": rows}}}}
    assert drive.execute("tickets_job", run_config=config).success


def _inbox(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "inbox").glob("*.parquet"))


def test_each_materialization_becomes_an_input(emulator, instance, tmp_path: Path) -> None:
    drive = _driver(emulator, instance, tmp_path, "shop/tickets")
    assert drive.tick(NAMES.source_sensor).skipped == "no new materialization of shop/tickets"
    _materialize(drive, 4)
    _materialize(drive, 5)  # two before the sensor's first look: only the latest is taken
    first = drive.tick(NAMES.source_sensor)
    assert [r.success for r in first.runs] == [True]
    (name,) = [n.removesuffix(".parquet") for n in _inbox(tmp_path)]
    assert name.startswith("shop.tickets-s")

    # the inbox sensor takes it like a dropped table, the status sensor collects it
    taken = drive.tick(NAMES.inbox_sensor)
    assert [(r.partition, r.success) for r in taken.runs] == [(name, True)]
    assert poll_and_collect(drive, [name]) == {name: None}
    results = f"read_parquet('{tmp_path}/results/input_file={name}/*.parquet')"
    rows = duckdb.sql(f"select ticket_id, queue from {results} order by 1").fetchall()
    assert [r[0] for r in rows] == [f"eu-{i}" for i in range(5)]
    assert {r[1] for r in rows} <= {"billing", "tech", "other"}

    # a later materialization is a new input; one already taken is never taken again
    _materialize(drive, 2)
    again = drive.tick(NAMES.source_sensor)
    assert len(again.runs) == 1 and len(_inbox(tmp_path)) == 2
    assert drive.tick(NAMES.source_sensor).runs == []


def test_a_partitioned_upstream_through_its_own_io_manager(
    emulator, instance, tmp_path: Path
) -> None:
    drive = _driver(emulator, instance, tmp_path, "regional")
    assert drive.execute("regional_job", "us").success
    drive.tick(NAMES.source_sensor)  # takes the latest: us
    assert drive.execute("regional_job", "eu").success
    drive.tick(NAMES.source_sensor)
    names = [n.removesuffix(".parquet") for n in _inbox(tmp_path)]
    assert [n.split("-s")[0] for n in names] == ["regional-eu", "regional-us"]
    taken = drive.tick(NAMES.inbox_sensor)
    assert sorted(r.partition for r in taken.runs) == names
    assert poll_and_collect(drive, names) == dict.fromkeys(names)
    counts = duckdb.sql(
        f"select input_file, count(*) from read_parquet('{tmp_path}/results/*/*.parquet', "
        "hive_partitioning=true) group by 1 order by 1"
    ).fetchall()
    assert [c for _, c in counts] == [2, 3]


def test_lineage_and_settings(emulator, instance, tmp_path: Path) -> None:
    drive = _driver(emulator, instance, tmp_path, "regional")
    spec = drive.repo.asset_graph.get(NAMES.inbox)
    assert dg.AssetKey("regional") in spec.parent_keys
    with pytest.raises(ValueError, match="source: its rows need a template"):
        PipelineSettings(name="x", source="shop/tickets")
    with pytest.raises(ValueError, match="is not an asset key"):
        PipelineSettings(name="x", source="shop//tickets", template=TEMPLATE)


@pytest.mark.parametrize(
    ("key", "partition", "storage_id", "name"),
    [
        (["tickets"], None, 7, "tickets-s7"),
        (["shop", "tickets"], "2026-12-01", 12, "shop.tickets-2026-12-01-s12"),
        (["t"], "eu|2026-12-01", 3, "t-eu_2026-12-01-s3"),
        (["_x"], "a b", 1, "x-a_b-s1"),
        (["t"], "p" * 300, 99, "t-" + "p" * 194 + "-s99"),
    ],
)
def test_source_input_names(
    key: list[str], partition: str | None, storage_id: int, name: str
) -> None:
    assert source_input_name(dg.AssetKey(key), partition, storage_id) == name
