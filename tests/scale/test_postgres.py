"""deploy/dagster.yaml on a real PostgreSQL server: the instance loads, the gateway pool limit is
stored there, and the whole pipeline runs through the real daemon with its runs in Postgres."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster_dev_support import DagsterDev, dagster_dev, user_project
from pipeline_support import chat_lines, counters, write_input

from batch_pipeline import build_pipeline_defs
from batch_pipeline.integration.assets import INVARIANT_CHECK

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "batch_pipeline" / "samples" / "support_tickets.jsonl"
GATEWAY_POOL = "bifrost_gateway"
HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"
BURST = 8  # files dropped into the inbox at once, twice the pool's limit


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


@pytest.mark.slow
def test_a_fresh_instance_never_runs_more_gateway_steps_than_the_pool_limit(
    emulator, pg_dagster_home, postgres_server, postgres_db, tmp_path: Path
) -> None:
    """On a fresh database, the install step the Helm values run (the user deployment's init
    container) sets the pool's limit; then a burst of 8 files, with the run queue opened wider
    than the pool, never has more gateway steps (submitted_batches, collected_batches) running
    at once than the limit, as Postgres's event log records them."""
    home, env = pg_dagster_home
    instance = yaml.safe_load((home / "dagster.yaml").read_text())
    instance["concurrency"]["runs"]["max_concurrent_runs"] = BURST  # the pool alone holds them
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    values = yaml.safe_load(HELM_VALUES.read_text())
    (init,) = values["dagster-user-deployments"]["deployments"][0]["initContainers"]
    assert init["command"][:5] == ["dagster", "instance", "concurrency", "set", GATEWAY_POOL]
    done = _dagster(init["command"][1:], env)
    assert done.returncode == 0, done.stderr[-3000:]
    limit = int(init["command"][5])
    gateway_steps = {
        a.op.name
        for a in build_pipeline_defs({"name": "e2e"})
        .get_repository_def()
        .assets_defs_by_key.values()
        if a.is_executable and a.op.pool == GATEWAY_POOL
    }

    staged, data = tmp_path / "staged", tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    names = [f"burst_{i}" for i in range(BURST)]
    for name in names:
        lines = chat_lines(5)
        for line in lines:
            line["body"]["messages"][0]["content"] += f" ({name})"
        write_input(staged, name, lines)

    def gateway_marks() -> list[tuple[str, int, int]]:
        events = postgres_server.query(
            postgres_db,
            "select step_key, dagster_event_type, timestamp from event_logs "
            "where dagster_event_type in ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE')",
        )
        return sorted(
            (str(at), 0 if kind == "STEP_START" else -1, 1 if kind == "STEP_START" else -1)
            for step, kind, at in events
            if step in gateway_steps
        )

    project = user_project(tmp_path / "project", emulator.base_url, data)
    with dagster_dev(env, tmp_path / "dagster-dev.log", project) as dev:
        dev.wait(dev.location_loaded, 120, "the code location to load")
        for name in names:  # whole files appear at once (a rename), all in the same second
            os.replace(staged / "inbox" / f"{name}.jsonl", data / "inbox" / f"{name}.jsonl")
        outputs = [data / "results" / f"input_file={n}" / "part-0.parquet" for n in names]
        dev.wait(lambda: all(p.exists() for p in outputs), 900, "every file's Parquet")

        # a collect publishes its Parquet before its step ends: wait for every step's end
        dev.wait(lambda: len(gateway_marks()) >= 2 * 2 * BURST, 120, "every gateway step's end")

    marks = gateway_marks()
    running, most = 0, 0
    for _, _, change in marks:  # at equal times a step's end counts before another's start
        running += change
        most = max(most, running)
    print(f"\n{len(marks) // 2} gateway steps, at most {most} at once (limit {limit})")
    assert len(marks) == 2 * 2 * BURST  # a submit and a collect step per file, each ended
    assert 1 <= most <= limit
    rows = postgres_server.query(
        postgres_db, 'select concurrency_key, "limit", using_default_limit from concurrency_limits'
    )
    assert rows == [(GATEWAY_POOL, str(limit), "f")]  # set, not defaulted
