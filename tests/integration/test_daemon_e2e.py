"""End to end with the real Dagster daemon: `dagster dev` (webserver + daemon + code server) over
a project with one instance of the component in its defs.yaml, the emulator on loopback, files
dropped into the inbox, Parquet awaited; the status sensor's observations read back."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_dev_support import REPO, DagsterDev, dagster_dev, user_project
from pipeline_support import counters

SAMPLES = REPO / "batch_pipeline" / "samples"
# The user's own downstream asset: one partition per input file, read through the instance's IO
# manager as a DataFrame, materialized by the user's automation sensor when results land.
DOWNSTREAM = """
import dagster as dg
import pandas as pd

FILES = dg.DynamicPartitionsDefinition(name="e2e_input_files")


@dg.asset(
    ins={"rows": dg.AssetIn(key=["e2e", "batch_results"])},
    partitions_def=FILES,
    automation_condition=dg.AutomationCondition.eager(),
)
def ticket_labels(rows: pd.DataFrame) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"rows": len(rows), "type": type(rows).__name__, "files": ",".join(rows["input_file"].unique())}
    )


downstream = dg.AutomationConditionSensorDefinition(
    "downstream", target=[ticket_labels], default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=1,
)
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def dev(emulator, tmp_path: Path) -> Iterator[DagsterDev]:
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (data / "inbox").mkdir(parents=True)
    project = user_project(tmp_path / "project", emulator.base_url, data)
    (project / "their_project" / "defs" / "downstream.py").write_text(DOWNSTREAM)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # Even these small files are scanned on worker processes, inside the runs the daemon starts.
    env["BATCH_PIPELINE_INPUT_WORKERS"] = "2"
    with dagster_dev(env, tmp_path / "dagster-dev.log", project) as running:
        yield running


def test_daemon_runs_inbox_files_to_parquet(dev: DagsterDev, emulator, tmp_path: Path) -> None:
    data = tmp_path / "data"
    dev.wait(dev.location_loaded, 120, "the code location to load")
    for name in ("support_tickets.jsonl", "claude_extraction.jsonl"):
        shutil.copy(SAMPLES / name, data / "inbox" / name)

    outputs = [
        data / kind / f"input_file={name}" / "part-0.parquet"
        for kind in ("results", "errors")
        for name in ("support_tickets", "claude_extraction")
    ]
    dev.wait(lambda: all(p.exists() for p in outputs), 300, "both files' Parquet")

    rows = duckdb.sql(
        f"""select input_file, count(*) filter (where t = 'r'), count(*) filter (where t = 'e'),
                   count(distinct input_line)
            from (select input_file, input_line, 'r' t from read_parquet('{data}/results/*/*.parquet', hive_partitioning=true)
                  union all
                  select input_file, input_line, 'e' t from read_parquet('{data}/errors/*/*.parquet', hive_partitioning=true))
            group by 1 order by 1"""
    ).fetchall()
    assert rows == [("claude_extraction", 23, 2, 25), ("support_tickets", 37, 3, 40)]
    errors = pl.read_parquet(f"{data}/errors/*/*.parquet")
    assert errors["stage"].unique().to_list() == ["request"]
    assert counters(emulator.base_url)["batches_created"] == 2
    # what the sensor reported (its progress) and the runs wrote, as the UI reads them
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        observed = instance.fetch_observations(dg.AssetKey(["e2e", "submitted_batches"]), limit=100)
        finished = [
            r.asset_observation.metadata["batches_finished"].value for r in observed.records
        ]
        assert 1 in finished

    def outcomes() -> set[str]:
        """Recorded after the Parquet lands, by the same step: waited for, not raced."""
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
            return instance.get_materialized_partitions(dg.AssetKey(["e2e", "batch_outcomes"]))

    dev.wait(lambda: len(outcomes()) == 2, 60, "both files' outcomes")
    assert outcomes() == {"support_tickets", "claude_extraction"}

    # the user's downstream asset got each file's rows as a DataFrame, through the daemon
    def labelled() -> dict[str, dict[str, object]]:
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
            found = instance.fetch_materializations(dg.AssetKey("ticket_labels"), limit=10)
            return {
                r.partition_key: {k: v.value for k, v in r.asset_materialization.metadata.items()}
                for r in found.records
                if r.partition_key and r.asset_materialization
            }

    dev.wait(lambda: len(labelled()) == 2, 180, "the downstream asset's two partitions")
    assert labelled() == {
        "support_tickets": {"rows": 37, "type": "DataFrame", "files": "support_tickets"},
        "claude_extraction": {"rows": 23, "type": "DataFrame", "files": "claude_extraction"},
    }
