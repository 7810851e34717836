"""`python -m batch_pipeline.cli`: the same as the `batch-pipeline` command."""

from batch_pipeline.cli import console

console()
