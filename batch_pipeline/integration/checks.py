"""Warnings about an instance's batches: stuck past their deadline, or results close to the
provider's retention limit without having been collected. Each judgement reads the batches'
status from the gateway first (and records it: a run does this). The status sensor requests the
alerts job when its own view of a file changes verdict; the checks can also be run from the UI.

(A sensor cannot report these itself: Dagster 1.13 stores one run-less evaluation per check and
partition, so a verdict that changed twice would fail every later tick.)"""

import time

import dagster as dg

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.integration.assets import failure
from batch_pipeline.integration.names import PipelineNames
from batch_pipeline.integration.resources import DataRootResource, GatewayResource
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.operations.alerts import Finding, retention_risk, stuck_batches
from batch_pipeline.operations.poll import refresh_statuses

STUCK_CHECK = "no_stuck_batches"
RETENTION_CHECK = "results_collected_before_retention"
_HOURS = 3600


def judge_batches(
    settings: PipelineSettings, data: DataRootResource, gateway: GatewayResource, name: str
) -> dict[str, Finding]:
    """Both findings for input file `name`, from its manifest with its batches' status read
    again from the gateway."""
    try:
        with gateway.client() as client:
            manifest = refresh_statuses(client, data.store(), name)
    except BatchPipelineError as exc:
        raise failure(exc, name) from None
    if manifest is None:
        nothing = Finding(True, "nothing submitted")
        return {STUCK_CHECK: nothing, RETENTION_CHECK: nothing}
    now, alerts = time.time(), settings.alerts
    return {
        STUCK_CHECK: stuck_batches(
            manifest, now=now, grace_seconds=alerts.stuck_grace_hours * _HOURS
        ),
        RETENTION_CHECK: retention_risk(
            manifest,
            now=now,
            margin_days=alerts.retention_margin_days,
            collected=data.layout().results_file(name).exists(),
        ),
    }


def check_evaluation(
    names: PipelineNames, name: str, check: str, finding: Finding
) -> dg.AssetCheckEvaluation:
    """A WARN evaluation of `check` on partition `name`, as the alerts job logs it."""
    return dg.AssetCheckEvaluation(
        asset_key=names.submitted_batches,
        check_name=check,
        passed=finding.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=finding.description,
        metadata={"batch_ids": dg.MetadataValue.json(list(finding.batch_ids))},
        partition=name,
    )


def build_checks(
    settings: PipelineSettings, names: PipelineNames, partitions: dg.PartitionsDefinition
) -> list[dg.AssetChecksDefinition]:
    """The stuck and retention checks of one instance, on its `submitted_batches`."""
    data_key, gateway_key = names.data_resource, names.gateway_resource

    def result(context: dg.AssetCheckExecutionContext, check: str) -> dg.AssetCheckResult:
        data: DataRootResource = getattr(context.resources, data_key)
        gateway: GatewayResource = getattr(context.resources, gateway_key)
        finding = judge_batches(settings, data, gateway, context.partition_key)[check]
        return dg.AssetCheckResult(
            passed=finding.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=finding.description,
            metadata={"batch_ids": dg.MetadataValue.json(list(finding.batch_ids))},
        )

    @dg.asset_check(
        asset=names.submitted_batches,
        name=STUCK_CHECK,
        partitions_def=partitions,
        required_resource_keys={data_key, gateway_key},
        description="Warns when a batch is still running past its expires_at plus "
        "alerts.stuck_grace_hours.",
    )
    def no_stuck_batches(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return result(context, STUCK_CHECK)

    @dg.asset_check(
        asset=names.submitted_batches,
        name=RETENTION_CHECK,
        partitions_def=partitions,
        required_resource_keys={data_key, gateway_key},
        description="Warns when results are not collected yet and the provider deletes them "
        "within alerts.retention_margin_days (Anthropic keeps 29 days, OpenAI 30).",
    )
    def results_collected_before_retention(
        context: dg.AssetCheckExecutionContext,
    ) -> dg.AssetCheckResult:
        return result(context, RETENTION_CHECK)

    return [no_stuck_batches, results_collected_before_retention]
