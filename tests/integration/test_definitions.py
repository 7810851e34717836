"""The code location loads: in-process, and through workspace.yaml as `dagster dev -w` loads it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from batch_pipeline.definitions import defs as load_defs

REPO = Path(__file__).resolve().parents[2]


def _defs() -> dg.Definitions:
    return load_defs if isinstance(load_defs, dg.Definitions) else load_defs()


def test_definitions_load_and_are_complete() -> None:
    defs = _defs()
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {
        "demo/inbox",
        "demo/batch_input",
        "demo/submitted_batches",
        "demo/batch_results",
        "demo/batch_errors",
        "demo/batch_outcomes",
    }
    assert {s.name for s in defs.sensors} == {"demo_inbox_sensor", "demo_status_sensor"}
    assert {s.name for s in defs.schedules} == {"demo_inbox_schedule"}
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"demo_submit", "demo_collect", "demo_alerts", "demo_retry", "demo_cancel"} <= jobs
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {
        "every_input_line_accounted_for",
        "error_rate_below_threshold",
        "no_stuck_batches",
        "results_collected_before_retention",
    }
    assert set(defs.resources) == {"demo_gateway", "demo_data", "demo_io_manager"}


def test_workspace_yaml_loads_with_the_dagster_cli(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dg_reads_the_project_from_pyproject(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dg_cli = Path(sys.executable).with_name("dg")
    done = subprocess.run(
        [str(dg_cli), "check", "defs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr
