"""Fixtures for the results package tests."""

from __future__ import annotations

from datetime import datetime

import pytest
from results_helpers import COLLECTED_AT


@pytest.fixture
def collected_at() -> datetime:
    """A fixed, timezone-aware collect time (microseconds included, to check precision)."""
    return COLLECTED_AT
