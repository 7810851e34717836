"""Shared steps of the reliability suite: drive partitions through the real Dagster definitions,
read the emulator's counters, and check what a reader of the data root would see."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import polars as pl
import pyarrow.parquet as pq

from batch_pipeline.defs.assets import (
    INVARIANT_CHECK,
    batch_input,
    collected_batches,
    submitted_batches,
)
from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.defs.sensors import batch_status_sensor
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.results import ERRORS_SCHEMA, RESULTS_SCHEMA

REPO = Path(__file__).resolve().parents[2]
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def resources(
    base_url: str, data_root: Path, *, settings: dict[str, Any] | None = None, **gateway: Any
) -> dict[str, Any]:
    """The pipeline's two resources, pointed at a gateway and a data root; `settings` and
    `gateway` override PipelineSettings and GatewayResource fields."""
    pipeline = {"data_root": str(data_root), "inbox_settle_seconds": 0.0, **(settings or {})}
    return {
        "gateway": GatewayResource(base_url=base_url, **gateway),
        "pipeline": PipelineSettings(**pipeline),
    }


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """What a failed run tells its user: the Failure's description, else the error raised."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description
            error = data.error  # Dagster's wrapper; the error the step raised is its cause
            while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                error = error.cause
            return error.message.strip()
    return ""


def submit(
    instance: dg.DagsterInstance,
    name: str,
    res: dict[str, Any],
    submit_config: dict[str, Any] | None = None,
) -> str | None:
    """Materialize batch_input + submitted_batches for one partition; None or why it failed."""
    if not instance.has_dynamic_partition(input_files.name, name):
        instance.add_dynamic_partitions(input_files.name, [name])
    run_config: dict[str, Any] = dict(QUIET)
    if submit_config:
        run_config["ops"] = {"submitted_batches": {"config": submit_config}}
    result = dg.materialize(
        [batch_input, submitted_batches],
        partition_key=name,
        instance=instance,
        resources=res,
        run_config=run_config,
        raise_on_error=False,
    )
    return None if result.success else failure_message(result)


def collect(instance: dg.DagsterInstance, name: str, res: dict[str, Any]) -> str | None:
    """Materialize the collect multi-asset for one partition; None or why it failed."""
    if not instance.has_dynamic_partition(input_files.name, name):
        instance.add_dynamic_partitions(input_files.name, [name])
    result = dg.materialize(
        [collected_batches],
        partition_key=name,
        instance=instance,
        resources=res,
        run_config=QUIET,
        raise_on_error=False,
    )
    if not result.success:
        return failure_message(result)
    (invariant,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == INVARIANT_CHECK
    ]
    return None if invariant.passed else f"invariant check failed: {invariant.description}"


def sensor_tick(
    instance: dg.DagsterInstance, res: dict[str, Any], cursor: str | None
) -> dg.SensorResult:
    """Evaluate the status sensor once, as the daemon would."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=res)
    return batch_status_sensor(context)


def poll_and_collect(
    instance: dg.DagsterInstance,
    names: Iterable[str],
    res: dict[str, Any],
    *,
    timeout: float = 60.0,
    between_ticks: Callable[[int], None] | None = None,
) -> dict[str, str | None]:
    """Tick the status sensor until it asks to collect every name, and run each collect it asks
    for; returns name -> None (collected) or the collect's failure message."""
    waiting, outcomes = set(names), {}
    cursor, tick = None, 0
    deadline = time.monotonic() + timeout
    while waiting:
        assert time.monotonic() < deadline, f"still waiting for {sorted(waiting)}"
        answer = sensor_tick(instance, res, cursor)
        cursor = answer.cursor
        for request in answer.run_requests or []:
            if request.partition_key in waiting:
                waiting.discard(request.partition_key)
                outcomes[request.partition_key] = collect(instance, request.partition_key, res)
        tick += 1
        if between_ticks is not None:
            between_ticks(tick)
        if waiting:
            time.sleep(0.05)
    return outcomes


def counters(base_url: str, verify: ssl.SSLContext | bool = True) -> dict[str, Any]:
    """The emulator's admin counters (`verify` trusts an https emulator's certificate)."""
    return httpx.get(f"{base_url}/_emulator/counters", timeout=10, verify=verify).json()


def arm(base_url: str, **fault: Any) -> None:
    """Arm one emulator fault."""
    httpx.post(f"{base_url}/_emulator/faults", json=fault, timeout=10).raise_for_status()


def armed(base_url: str) -> list[dict[str, Any]]:
    """The faults still armed (each with its remaining shots)."""
    return httpx.get(f"{base_url}/_emulator/faults", timeout=10).json()["faults"]


def shard_ids(data_root: Path, names: Iterable[str]) -> list[str]:
    """Every shard id the manifests of `names` record."""
    store = ManifestStore(DataLayout.at(data_root).root / "batches")
    found = []
    for name in names:
        manifest = store.load(name)
        assert manifest is not None, f"{name}: no manifest"
        found.extend(manifest.shards)
    return found


def assert_one_batch_per_shard(
    base_url: str, data_root: Path, names: Iterable[str], verify: ssl.SSLContext | bool = True
) -> None:
    """The gateway created exactly one batch for each shard, and no batch for anything else."""
    shards = shard_ids(data_root, names)
    seen = counters(base_url, verify)
    by_shard = seen["batches_by_metadata"].get("bp_shard", {})
    assert by_shard == dict.fromkeys(shards, 1), by_shard
    assert seen["batches_created"] == len(shards)


def input_lines(path: Path) -> int:
    """How many request lines (non-blank) an input file has."""
    with open(path, "rb") as lines:
        return sum(1 for line in lines if line.strip())


def assert_invariant(data_root: Path, name: str, expected_lines: int) -> None:
    """Every input line 1..N is in exactly one row of results or errors (read with DuckDB)."""
    root = DataLayout.at(data_root).root
    rows = duckdb.sql(
        f"""select count(*), count(distinct input_line), count(input_line), min(input_line),
                   max(input_line)
            from (select input_line from read_parquet('{root}/results/input_file={name}/*.parquet')
                  union all
                  select input_line from read_parquet('{root}/errors/input_file={name}/*.parquet'))
        """
    ).fetchall()[0]
    assert rows == (expected_lines, expected_lines, expected_lines, 1, expected_lines), rows


def assert_parquet_complete(data_root: Path, name: str) -> tuple[int, int]:
    """Both tables of a partition are whole Parquet files with the contract's schema, readable
    by pyarrow and polars; returns (results rows, errors rows)."""
    layout = DataLayout.at(data_root)
    counts = []
    for path, schema in (
        (layout.results_file(name), RESULTS_SCHEMA),
        (layout.errors_file(name), ERRORS_SCHEMA),
    ):
        table = pq.read_table(path)
        assert table.schema.equals(schema, check_metadata=False), table.schema
        assert pq.ParquetFile(path).metadata.num_rows == table.num_rows
        assert pl.read_parquet(path).height == table.num_rows
        counts.append(table.num_rows)
    return counts[0], counts[1]


def visible_parquet(data_root: Path) -> list[Path]:
    """The Parquet files a reader globbing results/ and errors/ would pick up."""
    root = DataLayout.at(data_root).root
    return sorted(p for kind in ("results", "errors") for p in (root / kind).glob("*/*.parquet"))


def assert_no_partial_files(data_root: Path) -> None:
    """Readers see only whole files: every visible *.parquet opens, and anything else under
    results/ and errors/ is hidden (a dot-file) so no glob or dataset reader picks it up."""
    root = DataLayout.at(data_root).root
    for path in visible_parquet(data_root):
        pq.read_table(path)
    for kind in ("results", "errors"):
        for path in (root / kind).rglob("*"):
            if path.is_file() and not path.name.endswith(".parquet"):
                assert path.name.startswith("."), f"{path} is visible to readers"
