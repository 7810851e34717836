"""deploy/dagster.yaml on a real PostgreSQL server: the instance loads, the gateway pool limit is
stored there, and the whole pipeline runs through the real daemon with its runs in Postgres."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from dagster_dev_support import DagsterDev, dagster_dev, user_project
from pipeline_support import counters

from batch_pipeline import build_pipeline_defs
from batch_pipeline.integration.assets import INVARIANT_CHECK

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "batch_pipeline" / "samples" / "support_tickets.jsonl"
GATEWAY_POOL = "bifrost_gateway"


def _dagster(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagster", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_instance_info_loads_the_postgres_config(pg_dagster_home, postgres_server, postgres_db):
    home, env = pg_dagster_home
    info = _dagster(["instance", "info"], env)
    assert info.returncode == 0, info.stderr[-3000:]
    for storage in ("PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"):
        assert storage in info.stdout
    assert env["DAGSTER_PG_PASSWORD"] not in info.stdout + info.stderr
    tables = {
        row[0] for row in postgres_server.query(postgres_db, "select tablename from pg_tables")
    }
    assert {"runs", "event_logs", "jobs", "concurrency_limits"} <= tables
    assert not (home / "history").exists(), "SQLite run storage was created next to dagster.yaml"


@pytest.mark.slow  # dagster-postgres retries the connection for about 13 s before giving up
def test_a_wrong_password_is_refused_and_not_echoed(pg_dagster_home):
    _, env = pg_dagster_home
    wrong = "not-the-Password-42"
    info = _dagster(["instance", "info"], {**env, "DAGSTER_PG_PASSWORD": wrong})
    assert info.returncode != 0
    assert wrong not in info.stdout + info.stderr


def test_the_gateway_pool_limit_is_kept_in_postgres(pg_dagster_home, postgres_server, postgres_db):
    defs = build_pipeline_defs({"name": "pooled"})
    pools = {
        a.op.pool
        for a in defs.get_repository_def().assets_defs_by_key.values()
        if a.is_executable and a.op.pool
    }
    assert pools == {GATEWAY_POOL}  # submitted_batches and the collect step share it
    _, env = pg_dagster_home
    done = _dagster(["instance", "concurrency", "set", GATEWAY_POOL, "2"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = postgres_server.query(
        postgres_db, 'select concurrency_key, "limit", using_default_limit from concurrency_limits'
    )
    assert rows == [(GATEWAY_POOL, "2", "f")]


@pytest.fixture
def dagster_dev_on_postgres(emulator, pg_dagster_home, tmp_path: Path) -> Iterator[DagsterDev]:
    """`dagster dev` over a project on the Postgres instance; stopped at teardown."""
    _, env = pg_dagster_home
    (tmp_path / "data" / "inbox").mkdir(parents=True)
    project = user_project(tmp_path / "project", emulator.base_url, tmp_path / "data")
    with dagster_dev(env, tmp_path / "dagster-dev.log", project) as dev:
        yield dev


@pytest.mark.slow
def test_daemon_runs_an_inbox_file_to_parquet_on_postgres(
    dagster_dev_on_postgres, emulator, pg_dagster_home, postgres_server, postgres_db, tmp_path
) -> None:
    dev, data = dagster_dev_on_postgres, tmp_path / "data"
    dev.wait(dev.location_loaded, 120, "the code location to load")
    shutil.copy(SAMPLE, data / "inbox" / SAMPLE.name)

    outputs = [
        data / kind / "input_file=support_tickets" / "part-0.parquet"
        for kind in ("results", "errors")
    ]
    dev.wait(lambda: all(p.exists() for p in outputs), 300, "the Parquet of both tables")

    rows = duckdb.sql(
        f"""select count(*) filter (where t = 'r'), count(*) filter (where t = 'e'),
                   count(distinct input_line), min(input_line), max(input_line)
            from (select input_line, 'r' t from read_parquet('{outputs[0]}')
                  union all
                  select input_line, 'e' t from read_parquet('{outputs[1]}'))"""
    ).fetchall()
    assert rows == [(37, 3, 40, 1, 40)]
    assert counters(emulator.base_url)["batches_created"] == 1

    def runs_done() -> bool:
        return {r[0] for r in _runs(postgres_server, postgres_db)} >= {"e2e_submit", "e2e_collect"}

    dev.wait(runs_done, 60, "both runs to succeed in Postgres")
    runs = _runs(postgres_server, postgres_db)
    assert sorted(runs) == [("e2e_collect", "SUCCESS"), ("e2e_submit", "SUCCESS")]
    invariant = postgres_server.query(
        postgres_db,
        "select check_name, execution_status from asset_check_executions "
        f"where check_name = '{INVARIANT_CHECK}'",
    )
    assert invariant == [(INVARIANT_CHECK, "SUCCEEDED")]
    pools = postgres_server.query(
        postgres_db, 'select concurrency_key, "limit", using_default_limit from concurrency_limits'
    )
    assert pools == [(GATEWAY_POOL, "4", "t")], "the default pool limit of deploy/dagster.yaml"
    assert not (pg_dagster_home[0] / "history").exists(), "runs went to SQLite, not Postgres"


def _runs(server, db: str) -> list[tuple[str, ...]]:
    return server.query(
        db, "select pipeline_name, status from runs where status in ('SUCCESS', 'FAILURE')"
    )
