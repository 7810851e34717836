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
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}
    assert keys == {"batch_input", "submitted_batches", "batch_results", "batch_errors"}
    assert {s.name for s in defs.sensors} == {"inbox_sensor", "batch_status_sensor"}
    assert {s.name for s in defs.schedules} == {"inbox_schedule"}
    assert {"submit_job", "collect_job"} <= {j.name for j in defs.resolve_all_job_defs()}
    checks = {c.name for a in defs.assets for c in getattr(a, "check_specs", [])}
    assert "every_input_line_accounted_for" in checks


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
