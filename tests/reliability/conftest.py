"""Fixtures of the reliability suite: a Dagster instance on disk and the shared test helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Shared with other suites: pipeline_support (tests/), inputs_corpus (tests/inputs/), tls_certs
# (tests/gateway/).
TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "inputs"), str(TESTS / "gateway")]


@pytest.fixture
def instance(tmp_path: Path) -> Iterator:
    """A throwaway Dagster instance with its storage under the test's tmp_path."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        yield instance


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """The pipeline's data root for one test."""
    root = tmp_path / "data"
    (root / "inbox").mkdir(parents=True)
    return root
