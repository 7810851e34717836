"""`BatchPipelineComponent`: one pipeline instance per `defs.yaml` in a Dagster project.

    # <project>/defs/tickets/defs.yaml
    type: batch_pipeline.BatchPipelineComponent
    attributes:
      name: tickets
      data_root: data/tickets

The attributes are `PipelineSettings`; `dg scaffold defs batch_pipeline.BatchPipelineComponent
tickets` writes a working file named after its folder.
"""

from __future__ import annotations

import dagster as dg
from dagster.components.component_scaffolding import scaffold_component

from batch_pipeline.integration.factory import build_pipeline_defs
from batch_pipeline.integration.settings import PipelineSettings


class BatchPipelineScaffolder(dg.Scaffolder):
    """Writes a defs.yaml whose instance is named after its folder, data under data/<name>."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = "".join(c if c.isalnum() else "_" for c in request.target_path.name)
        if not name[:1].isalpha():
            name = f"batches_{name}"
        scaffold_component(request, {"name": name, "data_root": f"data/{name}"})


@dg.scaffold_with(BatchPipelineScaffolder)
class BatchPipelineComponent(PipelineSettings, dg.Component, dg.Resolvable):
    """LLM requests dropped into an inbox become provider batches through a Bifrost gateway,
    collected into results and errors Parquet with every request accounted for."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_pipeline_defs(self)
