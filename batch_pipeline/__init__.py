"""batch_pipeline: LLM requests through a Bifrost gateway's batch API into Parquet, with Dagster.

    type: batch_pipeline.BatchPipelineComponent      # a defs.yaml in your project
    defs = batch_pipeline.build_pipeline_defs({"name": "tickets"})   # or from Python

The public names are loaded on first use, so the command line starts without Dagster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batch_pipeline.integration.component import BatchPipelineComponent
    from batch_pipeline.integration.factory import build_pipeline_defs
    from batch_pipeline.integration.settings import PipelineSettings

_EXPORTS = {
    "BatchPipelineComponent": "batch_pipeline.integration.component",
    "build_pipeline_defs": "batch_pipeline.integration.factory",
    "PipelineSettings": "batch_pipeline.integration.settings",
}
__all__ = ["BatchPipelineComponent", "PipelineSettings", "build_pipeline_defs"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    """Lists the lazy exports too: Dagster's component registry finds them through dir()."""
    return sorted({*globals(), *__all__})
