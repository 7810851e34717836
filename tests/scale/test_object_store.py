"""The pipeline with its data root on S3-compatible object storage (moto on loopback): the same
code as on local disk, switched by configuration only. The Parquet is read back with pyarrow's
own S3 client and with DuckDB, not through the pipeline's code."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from dagster_dev_support import DagsterDev, dagster_dev, user_project
from driver_support import cli_driver
from pipeline_support import counters
from upath import UPath

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.registry import InputRefused
from batch_pipeline.operations.retry import write_retry_wave

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "batch_pipeline" / "samples" / "support_tickets.jsonl"
TABLES = ("results", "errors")


def _objects(bucket) -> list[str]:
    import s3fs

    return sorted(s3fs.S3FileSystem().find(bucket.name))


def _counts(bucket, prefix: str, name: str) -> tuple[int, int]:
    """(results rows, errors rows) read with pyarrow's native S3 filesystem."""
    fs = bucket.arrow_fs()
    return tuple(
        pq.read_table(
            f"{bucket.name}/{prefix}/{table}/input_file={name}/part-0.parquet", filesystem=fs
        ).num_rows
        for table in TABLES
    )


def test_a_run_on_an_s3_data_root_writes_everything_there(
    s3_bucket, emulator, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"  # where a relative local data root would land
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    drive = cli_driver(instance, emulator.base_url, s3_bucket.url())  # run --data-dir s3://...
    summary = drive.run([SAMPLE], progress=lambda _: None)
    assert summary.ok, summary.render()
    assert _counts(s3_bucket, "data", "support_tickets") == (37, 3)

    objects = _objects(s3_bucket)
    prefix = f"{s3_bucket.name}/data"
    assert f"{prefix}/inbox/support_tickets.jsonl" in objects
    assert f"{prefix}/batches/support_tickets.json" in objects
    assert f"{prefix}/staging/support_tickets/plan.json" in objects
    assert f"{prefix}/outcomes/original_file=support_tickets/part-0.parquet" in objects
    sha = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()  # the registered, immutable copy
    assert f"{prefix}/inputs/{sha}/support_tickets.jsonl" in objects
    assert f"{prefix}/inputs/registry/support_tickets.json" in objects
    assert not [o for o in objects if o.endswith((".tmp", ".lock"))], "temp files or leases left"
    assert list(cwd.iterdir()) == [], "nothing of the data root was written locally"

    import s3fs

    db = duckdb.connect()
    db.register_filesystem(s3fs.S3FileSystem())
    tables = ", ".join(
        f"'s3://{prefix}/{table}/input_file=support_tickets/part-0.parquet'" for table in TABLES
    )
    lines = db.sql(
        f"""select count(*), count(distinct input_line), min(input_line), max(input_line)
            from read_parquet([{tables}])"""
    ).fetchall()
    assert lines == [(40, 40, 1, 40)]  # every input line in exactly one of the two tables

    # the read-back command the summary prints works as printed, against this endpoint
    (command,) = [
        line.removeprefix("read them: ")
        for line in summary.render().splitlines()
        if line.startswith("read them: ")
    ]
    assert s3_bucket.endpoint not in command  # the SDK's settings find it, as for the runs
    shell = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    read = subprocess.run(
        ["bash", "-c", command], env=shell, capture_output=True, text=True, timeout=120
    )
    assert read.returncode == 0, read.stderr[-2000:]
    assert re.search(r"support_tickets\s*│\s*37\b", read.stdout), read.stdout

    again = drive.run([SAMPLE], progress=lambda _: None)
    assert again.ok
    assert counters(emulator.base_url)["batches_created"] == 1, "a re-run must not pay again"

    # new content under the used name is refused before the bucket's inbox is touched
    changed = tmp_path / SAMPLE.name
    changed.write_bytes(SAMPLE.read_bytes() + SAMPLE.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(InputRefused, match="new content under the used name 'support_tickets'"):
        drive.run([changed], progress=lambda _: None)
    inbox_copy = UPath(s3_bucket.url()) / "inbox" / SAMPLE.name
    assert inbox_copy.read_bytes() == SAMPLE.read_bytes()

    wave = write_retry_wave(
        DataLayout.at(s3_bucket.url()), "support_tickets", include_non_retryable=True
    )
    assert wave is not None and wave.requests == 3
    assert len(wave.path.read_bytes().splitlines()) == 3  # the original lines, in the bucket


@pytest.fixture
def dagster_dev_on_postgres_and_s3(emulator, pg_dagster_home, s3_bucket, tmp_path: Path):
    """`dagster dev` with Postgres storage and the data root on S3; stopped at teardown."""
    _, env = pg_dagster_home
    project = user_project(tmp_path / "project", emulator.base_url, s3_bucket.url())
    with dagster_dev({**env, **s3_bucket.env}, tmp_path / "dagster-dev.log", project) as dev:
        yield dev


@pytest.mark.slow
def test_daemon_on_postgres_and_s3_runs_an_inbox_object_to_parquet(
    dagster_dev_on_postgres_and_s3: DagsterDev,
    emulator,
    s3_bucket,
    postgres_server,
    postgres_db,
    tmp_path: Path,
) -> None:
    import s3fs

    dev = dagster_dev_on_postgres_and_s3
    dev.wait(dev.location_loaded, 120, "the code location to load")
    fs = s3fs.S3FileSystem()
    local = tmp_path / SAMPLE.name
    shutil.copy(SAMPLE, local)
    fs.put_file(str(local), f"{s3_bucket.name}/data/inbox/{SAMPLE.name}")

    outputs = [
        f"{s3_bucket.name}/data/{table}/input_file=support_tickets/part-0.parquet"
        for table in TABLES
    ]
    dev.wait(lambda: all(fs.exists(o) for o in outputs), 300, "the Parquet of both tables on S3")
    assert _counts(s3_bucket, "data", "support_tickets") == (37, 3)
    assert counters(emulator.base_url)["batches_created"] == 1

    def runs_done() -> bool:
        rows = postgres_server.query(
            postgres_db, "select pipeline_name, status from runs where status = 'SUCCESS'"
        )
        return {r[0] for r in rows} >= {"e2e_submit", "e2e_collect"}

    dev.wait(runs_done, 60, "both runs to succeed in Postgres")
