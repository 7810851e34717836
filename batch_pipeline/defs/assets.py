"""The pipeline's assets: validated shards -> submitted batches -> results and errors Parquet."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from batch_pipeline.collect import CollectError, CollectReport, collect_partition, load_plan
from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.inputs import InputRejected, prepare_input
from batch_pipeline.layout import LayoutError
from batch_pipeline.results import ERRORS_SCHEMA, RESULTS_SCHEMA
from batch_pipeline.submit import SubmissionError, submit_plan

INVARIANT_CHECK = "every_input_line_accounted_for"


def _table_schema(schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


@dg.asset(
    partitions_def=input_files,
    kinds={"jsonl"},
    group_name="batches",
    description="The input file validated, normalized and split into content-addressed shards "
    "within provider limits (data/staging/<name>/).",
)
def batch_input(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    layout = pipeline.layout()
    name = context.partition_key
    try:
        path = layout.input_file(name)
        plan = prepare_input(path, layout.staging(name), pipeline.input_options())
    except (InputRejected, LayoutError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    summary = plan.summary
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "staging": dg.MetadataValue.path(str(layout.staging(name))),
            "requests": summary.requests,
            "rejected_lines": plan.rejected_count,
            "bytes": summary.bytes,
            "shards": len(plan.shards),
            "models": ", ".join(sorted(summary.models)),
            "endpoints": ", ".join(sorted(summary.endpoints)),
            "estimated_prompt_tokens": summary.estimated_prompt_tokens,
            "input_sha256": plan.input_sha256,
        }
    )


class SubmitConfig(dg.Config):
    """Hand resolution of a create whose outcome is unknown (see the failure message)."""

    assume_not_created: list[str] = Field(
        default_factory=list, description="shard ids whose create certainly made no batch"
    )
    adopt: dict[str, str] = Field(
        default_factory=dict, description="shard id -> the batch id its create made"
    )


@dg.asset(
    partitions_def=input_files,
    deps=[batch_input],
    pool="bifrost_gateway",
    kinds={"bifrost"},
    group_name="batches",
    description="One provider batch per shard, created exactly once; the manifest "
    "data/batches/<name>.json maps shard -> batch id, provider, endpoint, created_at.",
)
def submitted_batches(
    context: dg.AssetExecutionContext,
    config: SubmitConfig,
    gateway: GatewayResource,
    pipeline: PipelineSettings,
) -> dg.MaterializeResult:
    layout, store = pipeline.layout(), pipeline.store()
    name = context.partition_key
    try:
        plan = load_plan(layout, name)
        with gateway.client() as client:
            outcomes = submit_plan(
                client,
                store,
                plan,
                completion_window=pipeline.completion_window,
                assume_not_created=config.assume_not_created,
                adopt=config.adopt,
            )
    except (SubmissionError, CollectError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    manifest = store.load(name)
    rows = [
        dg.TableRecord(
            {
                "shard_id": s.shard_id,
                "batch_id": s.batch_id or "",
                "provider": s.provider,
                "model": s.model,
                "endpoint": s.endpoint,
                "requests": s.request_count,
                "created_at": s.created_at or 0.0,
            }
        )
        for s in (manifest.shards.values() if manifest else [])
    ]
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(str(store.path(name))),
            "batch_ids": dg.MetadataValue.json([o.batch_id for o in outcomes]),
            "batches_created": sum(not o.reused for o in outcomes),
            "batches_reused": sum(o.reused for o in outcomes),
            "batches": dg.MetadataValue.table(rows),
        }
    )


@dg.multi_asset(
    partitions_def=input_files,
    specs=[
        dg.AssetSpec(
            "batch_results",
            deps=[submitted_batches],
            kinds={"parquet"},
            group_name="batches",
            description="One row per request that succeeded (data/results/input_file=<name>/).",
        ),
        dg.AssetSpec(
            "batch_errors",
            deps=[submitted_batches],
            kinds={"parquet"},
            group_name="batches",
            description="One row per request that did not succeed, with its stage "
            "(data/errors/input_file=<name>/).",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            INVARIANT_CHECK,
            asset="batch_results",
            blocking=True,
            description="Each line of the input file is in exactly one row of results or errors.",
        )
    ],
    pool="bifrost_gateway",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
)
def collected_batches(
    context: dg.AssetExecutionContext, gateway: GatewayResource, pipeline: PipelineSettings
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    name = context.partition_key
    try:
        with gateway.client() as client:
            report = collect_partition(client, pipeline.layout(), pipeline.store(), name)
    except CollectError as exc:
        raise dg.Failure(description=str(exc)) from None
    yield from collect_events(report)


def collect_events(report: CollectReport) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Materializations of both tables and the invariant check, from one collect."""
    yield dg.MaterializeResult(
        asset_key="batch_results",
        metadata={
            "dagster/row_count": report.results_rows,
            "path": dg.MetadataValue.path(str(report.results_path)),
            "dagster/column_schema": _table_schema(RESULTS_SCHEMA),
            "prompt_tokens": report.prompt_tokens,
            "completion_tokens": report.completion_tokens,
            "total_tokens": report.total_tokens,
            "batch_ids": dg.MetadataValue.json(sorted(report.batches)),
        },
    )
    yield dg.MaterializeResult(
        asset_key="batch_errors",
        metadata={
            "dagster/row_count": report.errors_rows,
            "path": dg.MetadataValue.path(str(report.errors_path)),
            "dagster/column_schema": _table_schema(ERRORS_SCHEMA),
            "errors_by_stage": dg.MetadataValue.json(report.errors_by_stage),
        },
    )
    inv = report.invariant
    yield dg.AssetCheckResult(
        check_name=INVARIANT_CHECK,
        asset_key="batch_results",
        passed=inv.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=inv.describe(),
        metadata={
            "input_lines": inv.expected,
            "results_rows": inv.results_rows,
            "errors_rows": inv.errors_rows,
            "missing_count": inv.missing_count,
            "missing_lines_sample": dg.MetadataValue.json(inv.missing_lines),
            "duplicate_count": inv.duplicate_count,
            "duplicate_lines_sample": dg.MetadataValue.json(inv.duplicate_lines),
            "unexpected_count": inv.unexpected_count,
        },
    )
