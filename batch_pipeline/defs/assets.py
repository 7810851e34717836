"""The pipeline's assets: validated shards -> submitted batches -> results and errors Parquet."""

import time
from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.gateway import GatewayError
from batch_pipeline.inputs import InputRejected
from batch_pipeline.ledger.layout import LayoutError
from batch_pipeline.operations.alerts import error_rate
from batch_pipeline.operations.collect import (
    CollectError,
    CollectReport,
    collect_partition,
    delete_batch_files,
    load_plan,
)
from batch_pipeline.operations.costs import (
    BudgetExceeded,
    PriceTableError,
    check_plan_budget,
    plan_estimates,
)
from batch_pipeline.operations.outcomes import build_outcomes
from batch_pipeline.operations.queue_limits import QueueGate
from batch_pipeline.operations.submit import SubmissionError, plan_to_submit, submit_plan
from batch_pipeline.results import ERRORS_SCHEMA, RESULTS_SCHEMA

INVARIANT_CHECK = "every_input_line_accounted_for"
BATCHES_TABLE = dg.TableSchema(
    columns=[
        dg.TableColumn("shard_id", "string"),
        dg.TableColumn("batch_id", "string"),
        dg.TableColumn("provider", "string"),
        dg.TableColumn("model", "string"),
        dg.TableColumn("endpoint", "string"),
        dg.TableColumn("requests", "int"),
        dg.TableColumn("created_at", "float"),
        dg.TableColumn("estimated_cost_usd", "float"),
        dg.TableColumn("waiting", "string"),
    ]
)
ERROR_RATE_CHECK = "error_rate_below_threshold"


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
        plan = plan_to_submit(
            pipeline.store(), name, path, layout.staging(name), pipeline.input_options()
        )
    except (InputRejected, LayoutError, SubmissionError) as exc:
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
        estimates = plan_estimates(plan, pipeline.price_table())
        new_cost = check_plan_budget(
            store,
            name,
            estimates,
            per_file=pipeline.max_cost_per_file_usd,
            per_day=pipeline.max_cost_per_day_usd,
            now=time.time(),
        )
        with gateway.client() as client:
            outcomes = submit_plan(
                client,
                store,
                plan,
                completion_window=pipeline.completion_window,
                assume_not_created=config.assume_not_created,
                adopt=config.adopt,
                estimates=estimates,
                gate=QueueGate(store.active(), pipeline.max_enqueued_tokens),
                settle_seconds=pipeline.create_settle_seconds,
            )
    except (SubmissionError, CollectError, BudgetExceeded, PriceTableError, LayoutError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except GatewayError as exc:  # e.g. a refused key or an unreachable gateway: one clear line
        raise dg.Failure(description=f"{name}: {exc}") from None
    for outcome in outcomes:
        if outcome.waiting:
            context.log.info(f"shard {outcome.shard_id} waits: {outcome.waiting}")
    manifest = store.load(name)
    records = list(manifest.shards.values()) if manifest else []
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
                "estimated_cost_usd": round(s.estimated_cost or 0.0, 6),
                "waiting": s.waiting or "",
            }
        )
        for s in records
    ]
    return dg.MaterializeResult(
        metadata={
            "manifest": dg.MetadataValue.path(str(store.path(name))),
            "batch_ids": dg.MetadataValue.json([o.batch_id for o in outcomes if o.batch_id]),
            "batches_created": sum(bool(o.batch_id) and not o.reused for o in outcomes),
            "batches_reused": sum(o.reused for o in outcomes),
            "shards_waiting": sum(bool(o.waiting) for o in outcomes),
            "estimated_cost_usd": round(sum(s.estimated_cost or 0.0 for s in records), 6),
            "estimated_cost_submitted_now_usd": round(new_cost, 6),
            "estimated_input_tokens": sum(s.estimated_input_tokens for s in records),
            "batches": dg.MetadataValue.table(rows, schema=BATCHES_TABLE),
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
        ),
        dg.AssetCheckSpec(
            ERROR_RATE_CHECK,
            asset="batch_errors",
            description="Warns when the share of failed requests passes max_error_rate.",
        ),
    ],
    pool="bifrost_gateway",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
)
def collected_batches(
    context: dg.AssetExecutionContext, gateway: GatewayResource, pipeline: PipelineSettings
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    name = context.partition_key
    store = pipeline.store()
    try:
        with gateway.client() as client:
            report = collect_partition(
                client, pipeline.layout(), store, name, prices=pipeline.price_table()
            )
            if pipeline.delete_files_after_collect and report.invariant.passed:
                for problem in delete_batch_files(client, store, name):
                    context.log.warning(f"cleanup: {problem}")
    except (CollectError, PriceTableError, LayoutError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except GatewayError as exc:  # transient ones are worth the retry policy's next try
        raise dg.Failure(description=f"{name}: {exc}", allow_retries=exc.retryable) from None
    yield from collect_events(report, max_error_rate=pipeline.max_error_rate)


def collect_events(
    report: CollectReport, *, max_error_rate: float
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Materializations of both tables, the invariant and the error-rate checks, from one collect."""
    yield dg.MaterializeResult(
        asset_key="batch_results",
        metadata={
            "dagster/row_count": report.results_rows,
            "path": dg.MetadataValue.path(str(report.results_path)),
            "dagster/column_schema": _table_schema(RESULTS_SCHEMA),
            "prompt_tokens": report.prompt_tokens,
            "completion_tokens": report.completion_tokens,
            "total_tokens": report.total_tokens,
            "cost_usd": round(report.cost_usd, 6),
            "unpriced_models": ", ".join(report.unpriced_models) or "none",
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
    rate = error_rate(
        report.errors_rows, report.results_rows + report.errors_rows, threshold=max_error_rate
    )
    yield dg.AssetCheckResult(
        check_name=ERROR_RATE_CHECK,
        asset_key="batch_errors",
        passed=rate.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=rate.description,
        metadata={"errors_by_stage": dg.MetadataValue.json(report.errors_by_stage)},
    )


@dg.asset(
    deps=["batch_results", "batch_errors"],
    kinds={"parquet", "duckdb"},
    group_name="batches",
    description="One row per (original input file, custom_id) with its final outcome across "
    "every attempt: the latest success, else the latest error "
    "(data/outcomes/original_file=<name>/).",
)
def batch_outcomes(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    files = build_outcomes(pipeline.layout())
    for built in files:
        if built.rebuilt:
            context.log.info(f"{built.original}: {built.rows} outcomes -> {built.path}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(f.rows for f in files),
            "path": dg.MetadataValue.path(str(pipeline.layout().root / "outcomes")),
            "files": dg.MetadataValue.json({f.original: f.rows for f in files}),
            "rebuilt": sum(f.rebuilt for f in files),
        }
    )
