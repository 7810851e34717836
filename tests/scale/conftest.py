"""Fixtures for the scale-out tests: a real PostgreSQL server and a Dagster home that uses it."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from postgres_server import (
    INSTALL_HINT,
    PostgresServer,
    PostgresUnavailable,
    find_bindir,
    running_postgres,
)

# pipeline_support.py lives one level up, beside the top-level tests.
sys.path.insert(0, str(Path(__file__).parent.parent))

REPO = Path(__file__).resolve().parents[2]
INSTANCE_YAML = REPO / "deploy" / "dagster.yaml"
_db_numbers = itertools.count()


def _unavailable(reason: str) -> NoReturn:
    """Skip locally; under CI (CI=true) the Postgres tests must run, so fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test module, on a free loopback port; always stopped."""
    bindir = find_bindir()
    if bindir is None:
        _unavailable(f"PostgreSQL server binaries not found (install them: {INSTALL_HINT})")
    try:
        with running_postgres(bindir) as server:
            yield server
    except PostgresUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the shared server."""
    name = f"dagster_{os.getpid()}_{next(_db_numbers)}"
    postgres_server.create_database(name)
    return name


@pytest.fixture
def pg_dagster_home(tmp_path: Path, postgres_server: PostgresServer, postgres_db: str):
    """A DAGSTER_HOME holding deploy/dagster.yaml, and the environment that points it at Postgres."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), **postgres_server.env(postgres_db)}
    return home, env
