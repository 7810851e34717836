"""Load a code location's definitions as `dagster dev -m` / `-w` would, and find the pipeline
instances in them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.workspace.autodiscovery import (  # how `dagster dev -m/-f` finds its target
    loadable_targets_from_python_file,
    loadable_targets_from_python_module,
)

from batch_pipeline.errors import PipelineError
from batch_pipeline.integration.names import PIPELINE_TAG

# The code location of this package: its own instance over the samples in data/.
DEFAULT_MODULE = "batch_pipeline.definitions"


def load_pipeline(
    *, module: str | None = None, workspace: str | None = None, pipeline: str | None = None
) -> tuple[dg.Definitions, str]:
    """The definitions of a Python module or of the workspace location holding `pipeline`
    (this package's own location when neither is given), and the instance chosen: `pipeline`,
    or the only one there is."""
    if module and workspace:
        raise PipelineError("give a module (-m) or a workspace (-w), not both")
    if not workspace:
        name = module or DEFAULT_MODULE
        defs = _from_targets(name, lambda: loadable_targets_from_python_module(name, os.getcwd()))
        return defs, choose_pipeline(defs, pipeline)
    locations = _from_workspace(Path(workspace))
    holding = [d for d in locations if pipeline is None or pipeline in pipelines_in(d)]
    if len(holding) == 1:
        return holding[0], choose_pipeline(holding[0], pipeline)
    every = sorted(p for d in locations for p in pipelines_in(d))
    if pipeline is None and len(every) == 1:
        defs = next(d for d in locations if pipelines_in(d))
        return defs, every[0]
    choice = f"no pipeline {pipeline!r}" if pipeline else "choose a pipeline with --pipeline"
    raise PipelineError(f"{workspace}: {choice} (pipelines: {', '.join(every) or 'none'})")


def pipelines_in(defs: dg.Definitions) -> list[str]:
    """The names of the pipeline instances in `defs` (their assets carry PIPELINE_TAG)."""
    found = {spec.tags.get(PIPELINE_TAG) for spec in defs.resolve_all_asset_specs()}
    return sorted(name for name in found if name)


def choose_pipeline(defs: dg.Definitions, name: str | None) -> str:
    """`name` when `defs` has that instance; the only instance when `name` is None."""
    pipelines = pipelines_in(defs)
    known = ", ".join(pipelines) or "none"
    if name is not None:
        if name not in pipelines:
            raise PipelineError(f"no pipeline {name!r} in these definitions (pipelines: {known})")
        return name
    if len(pipelines) != 1:
        raise PipelineError(f"choose a pipeline with --pipeline (pipelines: {known})")
    return pipelines[0]


def _from_targets(where: str, load: Any) -> dg.Definitions:
    try:
        targets = load()
    except Exception as exc:  # the user's code failed to import: say where, in one line
        detail = " ".join(str(exc).split())[:300]
        raise PipelineError(
            f"{where}: cannot load definitions: {type(exc).__name__}: {detail}"
        ) from None
    for target in targets:
        value = target.target_definition
        if isinstance(value, dg.Definitions):
            return value
        if callable(value):  # a lazy @dg.definitions function
            loaded = value()
            if isinstance(loaded, dg.Definitions):
                return loaded
    raise PipelineError(f"{where}: holds no Definitions")


def _from_workspace(path: Path) -> list[dg.Definitions]:
    """The definitions of every location of a workspace.yaml (python_module and python_file
    entries)."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"{path}: cannot read the workspace: {exc}") from None
    loaded = []
    for entry in config.get("load_from") or []:
        if "python_module" in entry:
            spec = entry["python_module"]
            spec = {"module_name": spec} if isinstance(spec, str) else spec
            workdir = spec.get("working_directory") or os.getcwd()
            module = spec["module_name"]
            loaded.append(
                _from_targets(
                    f"{path}: {module}",
                    lambda m=module, w=workdir: loadable_targets_from_python_module(m, w),
                )
            )
        elif "python_file" in entry:
            spec = entry["python_file"]
            spec = {"relative_path": spec} if isinstance(spec, str) else spec
            file = (path.parent / spec["relative_path"]).resolve()
            workdir = spec.get("working_directory") or str(path.parent.resolve())
            loaded.append(
                _from_targets(
                    f"{path}: {file}",
                    lambda f=file, w=workdir: loadable_targets_from_python_file(str(f), w),
                )
            )
        else:
            raise PipelineError(f"{path}: only python_module and python_file entries are supported")
    if not loaded:
        raise PipelineError(f"{path}: names no code location under load_from")
    return loaded
