"""Jobs launchable from the UI, the sensors and the schedule."""

import dagster as dg

from batch_pipeline.defs.partitions import input_files

submit_job = dg.define_asset_job(
    "submit_job",
    selection=dg.AssetSelection.assets("batch_input", "submitted_batches"),
    partitions_def=input_files,
    description="Validate and shard an input file, then create its batches (exactly once).",
    tags={"batch_pipeline/step": "submit"},
)

collect_job = dg.define_asset_job(
    "collect_job",
    selection=dg.AssetSelection.assets("batch_results", "batch_errors"),
    partitions_def=input_files,
    description="Read every finished batch of an input file into results and errors Parquet.",
    tags={"batch_pipeline/step": "collect"},
)
