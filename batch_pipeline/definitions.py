"""This package's code location: every `defs.yaml` under `batch_pipeline/defs/`, loaded by
Dagster's folder loader, installed or not."""

from pathlib import Path

import dagster as dg

import batch_pipeline.defs


@dg.definitions
def defs() -> dg.Definitions:
    tree = dg.ComponentTree(defs_module=batch_pipeline.defs, project_root=Path(__file__).parent)
    return tree.build_defs()
