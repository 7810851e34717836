"""Helpers shared by the results tests: a fixed collect time and Parquet read-back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

COLLECTED_AT = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of a Parquet file as dicts, read with pyarrow."""
    return pq.read_table(path).to_pylist()


def by_custom_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows keyed by custom_id (fails the test on a repeated id)."""
    keyed = {row["custom_id"]: row for row in rows}
    assert len(keyed) == len(rows), "a custom_id appears twice"
    return keyed
