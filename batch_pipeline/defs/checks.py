"""Warnings about batches: stuck past their deadline, or results close to the provider's
retention limit without having been collected. The status sensor reports these as it polls;
they can also be run by hand from the UI."""

import time

import dagster as dg

from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import PipelineSettings
from batch_pipeline.operations.alerts import Finding, retention_risk, stuck_batches

STUCK_CHECK = "no_stuck_batches"
RETENTION_CHECK = "results_collected_before_retention"


def finding_evaluation(name: str, check: str, finding: Finding) -> dg.AssetCheckEvaluation:
    """A WARN-severity evaluation of `check` on partition `name`, as the sensor reports it."""
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("submitted_batches"),
        check_name=check,
        passed=finding.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=finding.description,
        metadata={"batch_ids": dg.MetadataValue.json(list(finding.batch_ids))},
        partition=name,
    )


def _result(finding: Finding) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=finding.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=finding.description,
        metadata={"batch_ids": dg.MetadataValue.json(list(finding.batch_ids))},
    )


@dg.asset_check(
    asset="submitted_batches",
    name=STUCK_CHECK,
    partitions_def=input_files,
    description="Warns when a batch is still running past its expires_at plus stuck_grace_hours.",
)
def no_stuck_batches(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    manifest = pipeline.store().load(context.partition_key)
    if manifest is None:
        return _result(Finding(True, "nothing submitted"))
    return _result(
        stuck_batches(manifest, now=time.time(), grace_seconds=pipeline.stuck_grace_hours * 3600)
    )


@dg.asset_check(
    asset="submitted_batches",
    name=RETENTION_CHECK,
    partitions_def=input_files,
    description="Warns when results are not collected yet and the provider deletes them "
    "within retention_margin_days (Anthropic keeps 29 days, OpenAI 30).",
)
def results_collected_before_retention(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    name = context.partition_key
    manifest = pipeline.store().load(name)
    if manifest is None:
        return _result(Finding(True, "nothing submitted"))
    collected = pipeline.layout().results_file(name).exists()
    return _result(
        retention_risk(
            manifest,
            now=time.time(),
            margin_days=pipeline.retention_margin_days,
            collected=collected,
        )
    )
