"""Fixtures of the reliability suite: a data root per test and the shared test helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Shared with other suites: pipeline_support (tests/), inputs_corpus (tests/inputs/), tls_certs
# (tests/gateway/).
TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "inputs"), str(TESTS / "gateway")]


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """The pipeline's data root for one test."""
    root = tmp_path / "data"
    (root / "inbox").mkdir(parents=True)
    return root
