"""The jobs of one instance: submit and collect (asset jobs the sensors request), and the retry
wave and cancel jobs an operator launches from the UI or the command line.

Every job runs its steps in one process: the steps are short and mostly wait on the gateway, and
a process per step (Dagster's default) costs seconds each and memory per file under load.
"""

from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)
from pydantic import Field

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.integration.assets import PipelineAssets, failure
from batch_pipeline.integration.checks import check_evaluation, judge_batches
from batch_pipeline.integration.names import PIPELINE_TAG, PipelineNames
from batch_pipeline.integration.resources import DataRootResource, GatewayResource
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.operations.cancel import cancel_partition
from batch_pipeline.operations.retry import write_retry_wave

STEP_TAG = "batch_pipeline/step"


class RetryConfig(dg.Config):
    """Which errors a retry wave takes."""

    include_non_retryable: bool = Field(
        default=False,
        description="Also retry validation and 4xx errors (they will usually fail again)",
    )
    max_attempts: int | None = Field(
        default=None, description="Attempts per request (unset: collect.max_retry_attempts)"
    )


@dataclass(frozen=True)
class PipelineJobs:
    submit: UnresolvedAssetJobDefinition
    collect: UnresolvedAssetJobDefinition
    alerts: dg.JobDefinition
    retry: dg.JobDefinition
    cancel: dg.JobDefinition

    @property
    def all(self) -> list[UnresolvedAssetJobDefinition | dg.JobDefinition]:
        return [self.submit, self.collect, self.alerts, self.retry, self.cancel]


def build_jobs(
    settings: PipelineSettings,
    names: PipelineNames,
    partitions: dg.PartitionsDefinition,
    assets: PipelineAssets,
) -> PipelineJobs:
    """The jobs of one instance."""
    data_key, gateway_key = names.data_resource, names.gateway_resource

    def tags(step: str) -> dict[str, str]:
        return {PIPELINE_TAG: settings.name, STEP_TAG: step}

    submit = dg.define_asset_job(
        names.submit_job,
        selection=dg.AssetSelection.assets(
            assets.batch_input, assets.submitted_batches
        ).without_checks(),
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        description="Validate and shard an input file, then create its batches (exactly once).",
        tags=tags("submit"),
    )
    collect = dg.define_asset_job(
        names.collect_job,
        selection=dg.AssetSelection.assets(assets.collected),
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        description="Read every finished batch of an input file into results and errors "
        "Parquet, and rebuild the outcomes of its original file.",
        tags=tags("collect"),
    )

    @dg.op(
        name=names.alerts_op,
        required_resource_keys={data_key, gateway_key},
        description="Judge a file's batches: stuck past their deadline, or results near the "
        "provider's retention limit; logs both checks of submitted_batches.",
    )
    def judge(context: dg.OpExecutionContext) -> None:
        data: DataRootResource = getattr(context.resources, data_key)
        gateway: GatewayResource = getattr(context.resources, gateway_key)
        name = context.partition_key
        for check, finding in judge_batches(settings, data, gateway, name).items():
            # (Dagster records a check evaluation logged here; log_event's annotation lags)
            context.log_event(check_evaluation(names, name, check, finding))  # type: ignore[arg-type]

    @dg.job(
        name=names.alerts_job,
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        description="Judge an input file's batches again: stuck past their deadline, or results "
        "near the provider's retention limit (the status sensor asks when its view changes).",
        tags=tags("alerts"),
    )
    def alerts() -> None:
        judge()

    @dg.op(
        name=names.retry_op,
        required_resource_keys={data_key},
        description="Write <name>.retry-<n>.jsonl with the original lines of the retryable errors.",
    )
    def write_retry_file(context: dg.OpExecutionContext, config: RetryConfig) -> dg.Output[None]:
        data: DataRootResource = getattr(context.resources, data_key)
        name = context.partition_key
        try:
            wave = write_retry_wave(
                data.layout(),
                name,
                include_non_retryable=config.include_non_retryable,
                max_attempts=config.max_attempts or settings.collect.max_retry_attempts,
            )
        except BatchPipelineError as exc:
            raise failure(exc, name) from None
        if wave is None:
            context.log.info(f"{name}: nothing to retry")
            return dg.Output(None, metadata={"requests": 0})
        verb = "wrote" if wave.created else "already had"
        context.log.info(
            f"{verb} {wave.path} with {wave.requests} requests (attempt {wave.attempt})"
        )
        return dg.Output(
            None,
            metadata={
                "path": dg.MetadataValue.path(str(wave.path)),
                "name": wave.name,
                "requests": wave.requests,
                "attempt": wave.attempt,
                "created": wave.created,
            },
        )

    @dg.job(
        name=names.retry_job,
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        description="Retry what failed: a new inbox file with the retryable requests of a "
        "file; the inbox sensor takes it from there as its own partition.",
        tags=tags("retry"),
    )
    def retry() -> None:
        write_retry_file()

    @dg.op(
        name=names.cancel_op,
        required_resource_keys={data_key, gateway_key},
        description="Cancel every in-flight batch of the file; finished results are kept.",
    )
    def cancel_batches(context: dg.OpExecutionContext) -> dg.Output[None]:
        data: DataRootResource = getattr(context.resources, data_key)
        gateway: GatewayResource = getattr(context.resources, gateway_key)
        name = context.partition_key
        try:
            with gateway.client() as client:
                report = cancel_partition(client, data.store(), name)
        except BatchPipelineError as exc:
            raise failure(exc, name) from None
        context.log.info(
            f"cancel requested for {len(report.cancelled)} batch(es); "
            f"{len(report.already_finished)} had finished; "
            f"{len(report.never_submitted)} shard(s) will not be submitted"
        )
        return dg.Output(
            None,
            metadata={
                "cancelled": len(report.cancelled),
                "already_finished": len(report.already_finished),
                "never_submitted": len(report.never_submitted),
            },
        )

    @dg.job(
        name=names.cancel_job,
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        description="Cancel a file's batches; the status sensor then collects what finished "
        "and accounts for the rest as `canceled`.",
        tags=tags("cancel"),
    )
    def cancel() -> None:
        cancel_batches()

    return PipelineJobs(submit, collect, alerts, retry, cancel)
