"""Jobs launchable from the UI, the sensors and the schedule: submit, collect, outcomes, retry
wave and cancel."""

import dagster as dg
from pydantic import Field

from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.ledger.layout import LayoutError
from batch_pipeline.operations.cancel import CancelError, cancel_partition
from batch_pipeline.operations.retry import RetryError, write_retry_wave

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

outcomes_job = dg.define_asset_job(
    "outcomes_job",
    selection=dg.AssetSelection.assets("batch_outcomes"),
    description="Rebuild the outcomes view (one final row per original file and custom_id).",
)


class RetryConfig(dg.Config):
    """Which errors a retry wave takes."""

    include_non_retryable: bool = Field(
        default=False,
        description="Also retry validation and 4xx errors (they will usually fail again)",
    )


@dg.op(description="Write <name>.retry-<n>.jsonl with the original lines of the retryable errors.")
def write_retry_file(
    context: dg.OpExecutionContext, config: RetryConfig, pipeline: PipelineSettings
) -> None:
    try:
        wave = write_retry_wave(
            pipeline.layout(),
            context.partition_key,
            include_non_retryable=config.include_non_retryable,
            max_attempts=pipeline.max_retry_attempts,
        )
    except (RetryError, LayoutError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    if wave is None:
        context.log.info(f"{context.partition_key}: nothing to retry")
        return
    verb = "wrote" if wave.created else "already had"
    context.log.info(f"{verb} {wave.path} with {wave.requests} requests (attempt {wave.attempt})")


@dg.job(
    partitions_def=input_files,
    description="Retry what failed: a new inbox file with the retryable requests of a file; "
    "the inbox sensor takes it from there as its own partition.",
    tags={"batch_pipeline/step": "retry"},
)
def retry_job() -> None:
    write_retry_file()


@dg.op(description="Cancel every in-flight batch of the file; finished results are kept.")
def cancel_file_batches(
    context: dg.OpExecutionContext, gateway: GatewayResource, pipeline: PipelineSettings
) -> None:
    try:
        with gateway.client() as client:
            report = cancel_partition(client, pipeline.store(), context.partition_key)
    except CancelError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    context.log.info(
        f"cancel requested for {len(report.cancelled)} batch(es); "
        f"{len(report.already_finished)} had finished; "
        f"{len(report.never_submitted)} shard(s) will not be submitted"
    )


@dg.job(
    partitions_def=input_files,
    description="Cancel a file's batches; the status sensor then collects what finished and "
    "accounts for the rest as `canceled`.",
    tags={"batch_pipeline/step": "cancel"},
)
def cancel_job() -> None:
    cancel_file_batches()
