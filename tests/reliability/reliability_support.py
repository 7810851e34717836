"""Shared steps of the reliability suite: read the emulator's counters, and check what a reader
of the data root would see (the pipeline is driven with driver_support)."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import polars as pl
import pyarrow.parquet as pq

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.results import ERRORS_SCHEMA, RESULTS_SCHEMA

REPO = Path(__file__).resolve().parents[2]


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
