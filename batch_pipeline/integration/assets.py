"""The assets of one instance: inbox -> batch_input -> submitted_batches -> batch_results +
batch_errors + batch_outcomes, each a thin step over the operations on batches."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypedDict

import dagster as dg
import pyarrow as pa
from pydantic import Field

from batch_pipeline.errors import KEY_VARIABLES, BatchPipelineError, cause_of
from batch_pipeline.gateway import BifrostClient, GatewayError
from batch_pipeline.inputs import InputOptions
from batch_pipeline.inputs.models import ShardLimits
from batch_pipeline.inputs.prepare import InputSource, TableInput
from batch_pipeline.inputs.template import TemplateError, load_template
from batch_pipeline.integration.names import PIPELINE_TAG, PipelineNames
from batch_pipeline.integration.progress import (
    SUBMITTED_NOW_COST,
    spent_today,
    uncollected_submissions,
)
from batch_pipeline.integration.registration import (
    as_dropped,
    record_metadata,
    register_input,
)
from batch_pipeline.integration.resources import DataRootResource, GatewayResource
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.ledger.layout import DataLayout, is_table
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.ledger.registry import InputRecord, InputRegistry
from batch_pipeline.ledger.storage import DataPath, parquet_schema
from batch_pipeline.operations.alerts import error_rate
from batch_pipeline.operations.collect import (
    OUTPUT_ATTEMPTS,
    CollectReport,
    collect_partition,
    delete_batch_files,
    load_plan,
)
from batch_pipeline.operations.costs import check_plan_budget, plan_estimates
from batch_pipeline.operations.failures import is_transient, storage_errors_told
from batch_pipeline.operations.outcomes import OutcomesFile, build_outcomes
from batch_pipeline.operations.poll import refresh_statuses
from batch_pipeline.operations.queue_limits import QueueGate, queue_key
from batch_pipeline.operations.retry import attempt_of
from batch_pipeline.operations.submit import plan_to_submit, submit_plan
from batch_pipeline.prices import PriceTable
from batch_pipeline.providers import PROVIDERS

INVARIANT_CHECK = "every_input_line_accounted_for"
INPUT_POLICY_KEY = "input_policy"  # on the inbox asset: how files are taken (UI, CLI)
ERROR_RATE_CHECK = "error_rate_below_threshold"
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


class OnInvalid(Enum):
    """What a run does with invalid lines (Dagster config takes enums, not literals)."""

    reject = "reject"
    skip = "skip"


class BatchInputConfig(dg.Config):
    """Per-run choices for validating an input (unset: the instance's settings)."""

    on_invalid: OnInvalid | None = Field(
        default=None, description="reject a file with invalid lines, or skip those lines"
    )
    default_provider: str | None = Field(
        default=None, description="provider of models written without `provider/`"
    )
    resubmit: bool | None = Field(
        default=None,
        description="submit (and pay) content already registered under another file name "
        "(unset: the instance's inputs.on_duplicate)",
    )


class SubmitConfig(dg.Config):
    """Hand resolution of a create whose outcome is unknown (see the failure message)."""

    assume_not_created: list[str] = Field(
        default_factory=list, description="shard ids whose create certainly made no batch"
    )
    adopt: dict[str, str] = Field(
        default_factory=dict, description="shard id -> the batch id its create made"
    )


class _Common(TypedDict):
    """What every asset of an instance shares."""

    partitions_def: dg.PartitionsDefinition
    group_name: str
    tags: dict[str, str]


@dataclass(frozen=True)
class PipelineAssets:
    """What `build_assets` makes, for the jobs, checks and sensors built around it."""

    inbox: dg.AssetSpec
    batch_input: dg.AssetsDefinition
    submitted_batches: dg.AssetsDefinition
    collected: dg.AssetsDefinition

    @property
    def all(self) -> list[dg.AssetSpec | dg.AssetsDefinition]:
        return [self.inbox, self.batch_input, self.submitted_batches, self.collected]


def relative(layout: DataLayout, path: DataPath) -> str:
    """A path as the UI shows it: relative to the data root."""
    return str(path).removeprefix(str(layout.root)).lstrip("/")


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def failure(
    exc: BaseException,
    name: str,
    doing: str = "writing",
    settings: PipelineSettings | None = None,
    *,
    told: str | None = None,
) -> dg.Failure:
    """A step failure of one line: the cause a user can act on when `errors.cause_of` knows it
    (the same line the command line prints, its kind in the metadata), else the error (`told`,
    when the error's own text needs rewording for the user). Only a
    transient failure (`is_transient`) may be retried by the step's retry policy: a full disk or
    a 4xx fails the step at once."""
    transient = is_transient(exc)
    keys = (
        (settings.gateway.api_key_env, settings.gateway.virtual_key_env)
        if settings
        else KEY_VARIABLES
    )
    metadata: dict[str, Any] = {"error": " ".join(str(exc).split()), "transient": transient}
    found = cause_of(exc, name, doing=doing, key_variables=keys)
    if found is not None:
        metadata["cause"] = found.kind
        description = found.message
    else:
        description = f"{name}: {exc}" if isinstance(exc, GatewayError) else told or str(exc)
    return dg.Failure(description=description, metadata=metadata, allow_retries=transient)


def is_known_cause(exc: OSError, name: str) -> bool:
    """Whether an OSError a step met is a cause to report in one line (a full disk) rather
    than an unexpected error to raise as it is."""
    return cause_of(exc, name) is not None


def build_assets(
    settings: PipelineSettings, names: PipelineNames, partitions: dg.PartitionsDefinition
) -> PipelineAssets:
    """The assets of one instance, named by `names`, over `partitions` (one per input file)."""
    gateway_key, data_key = names.gateway_resource, names.data_resource
    common = _Common(
        partitions_def=partitions,
        group_name=settings.group_name,
        tags={PIPELINE_TAG: settings.name},
    )

    source = settings.source
    inbox = dg.AssetSpec(
        names.inbox,
        description="Input files and tables in <data_root>/inbox/ (one partition each, keyed "
        "by a safe form of the file name; `original_file` keeps the name; a refused file shows "
        "as a `rejected` observation)"
        + (f"; each materialization of {source} is written there as a table." if source else "."),
        kinds={"jsonl", "parquet"},
        metadata={
            INPUT_POLICY_KEY: dg.MetadataValue.json(
                settings.inputs.model_dump(
                    include={"complete_when", "settle_seconds", "on_duplicate", "on_name_reuse"}
                )
            )
        },
        # any input may come from any materialization of the source, whatever its partitions
        deps=[dg.AssetDep(source.split("/"), partition_mapping=dg.AllPartitionMapping())]
        if source
        else [],
        **common,
    )

    @dg.asset(
        key=names.batch_input,
        deps=[inbox],
        kinds={"jsonl"},
        required_resource_keys={data_key},
        description="The input file registered once as an immutable copy "
        "(<data_root>/inputs/<sha256>/<file>), then validated, normalized and split into "
        "content-addressed shards within provider limits (<data_root>/staging/<name>/); new "
        "content under a used name, or known content under a new one, is refused.",
        **common,
    )
    def batch_input(
        context: dg.AssetExecutionContext, config: BatchInputConfig
    ) -> dg.MaterializeResult:
        data: DataRootResource = getattr(context.resources, data_key)
        layout, name = data.layout(), context.partition_key
        record: InputRecord | None = None
        try:
            options = InputOptions(
                default_provider=config.default_provider or settings.inputs.default_provider,
                on_invalid=config.on_invalid.value
                if config.on_invalid
                else settings.inputs.on_invalid,
                limits={
                    provider: ShardLimits(
                        max_requests=PROVIDERS[provider].max_requests_per_batch,
                        max_bytes=max_bytes,
                        max_bytes_per_request=PROVIDERS[provider].max_bytes_per_request,
                    )
                    for provider, max_bytes in settings.providers.max_bytes_per_batch().items()
                },
            )
            resubmit = config.resubmit
            if resubmit is None:
                resubmit = settings.inputs.on_duplicate == "resubmit"
            record = register_input(context, settings, names, layout, name, resubmit=resubmit)
            source = input_source(settings, layout, name)
            plan = plan_to_submit(data.store(), name, source, layout.staging(name), options)
        except BatchPipelineError as exc:
            told = as_dropped(layout, record, str(exc))  # the inbox file, not its copy
            raise failure(exc, name, "staging the input", settings, told=told) from None
        except OSError as exc:
            if not is_known_cause(exc, name):
                raise
            raise failure(exc, name, "staging the input", settings) from exc  # trace kept
        except ValueError as exc:  # an unknown default provider
            raise dg.Failure(description=f"{name}: {exc}", allow_retries=False) from None
        summary = plan.summary
        path = source.path if isinstance(source, TableInput) else source
        return dg.MaterializeResult(
            data_version=dg.DataVersion(plan.input_sha256),
            metadata={
                "path": dg.MetadataValue.path(relative(layout, path)),
                "staging": dg.MetadataValue.path(relative(layout, layout.staging(name))),
                "requests": summary.requests,
                "rejected_lines": plan.rejected_count,
                "bytes": summary.bytes,
                "shards": len(plan.shards),
                "models": ", ".join(sorted(summary.models)),
                "endpoints": ", ".join(sorted(summary.endpoints)),
                "estimated_prompt_tokens": summary.estimated_prompt_tokens,
                "input_sha256": plan.input_sha256,
                **record_metadata(InputRegistry(layout), record),
            },
        )

    @dg.asset(
        key=names.submitted_batches,
        deps=[batch_input],
        pool=settings.gateway.pool,
        kinds={"bifrost"},
        required_resource_keys={gateway_key, data_key},
        description="One provider batch per shard, created exactly once; the manifest "
        "<data_root>/batches/<name>.json maps shard -> batch id, provider, endpoint, created_at.",
        **common,
    )
    def submitted_batches(
        context: dg.AssetExecutionContext, config: SubmitConfig
    ) -> dg.MaterializeResult:
        gateway: GatewayResource = getattr(context.resources, gateway_key)
        data: DataRootResource = getattr(context.resources, data_key)
        layout, store, name = data.layout(), data.store(), context.partition_key
        submit = settings.submit
        try:
            plan = load_plan(layout, name)
            estimates = plan_estimates(plan, price_table(settings))
            today = (
                spent_today(context.instance, names, time.time())
                if submit.max_cost_per_day_usd is not None
                else 0.0
            )
            new_cost = check_plan_budget(
                store.load(name),
                name,
                estimates,
                per_file=submit.max_cost_per_file_usd,
                per_day=submit.max_cost_per_day_usd,
                spent_today=today,
            )
            with gateway.client() as client, gateway.azure_blobs(settings.providers) as blobs:
                gate = (
                    queue_gate(context.instance, names, client, store, submit.max_enqueued_tokens)
                    if submit.max_enqueued_tokens
                    else None
                )
                outcomes = submit_plan(
                    client,
                    store,
                    plan,
                    completion_window=submit.completion_window,
                    assume_not_created=config.assume_not_created,
                    adopt=config.adopt,
                    estimates=estimates,
                    gate=gate,
                    settle_seconds=submit.create_settle_seconds,
                    options=settings.providers,
                    blobs=blobs,
                )
        except BatchPipelineError as exc:
            raise failure(exc, name, "submitting", settings) from None
        except OSError as exc:
            if not is_known_cause(exc, name):
                raise
            raise failure(exc, name, "submitting", settings) from exc  # trace kept
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
                "manifest": dg.MetadataValue.path(relative(layout, store.path(name))),
                "batch_ids": dg.MetadataValue.json([o.batch_id for o in outcomes if o.batch_id]),
                "batches_created": sum(bool(o.batch_id) and not o.reused for o in outcomes),
                "batches_reused": sum(o.reused for o in outcomes),
                "shards_waiting": sum(bool(o.waiting) for o in outcomes),
                "requests": sum(s.request_count for s in records),
                "estimated_cost_usd": round(sum(s.estimated_cost or 0.0 for s in records), 6),
                SUBMITTED_NOW_COST: round(new_cost, 6),
                "estimated_input_tokens": sum(s.estimated_input_tokens for s in records),
                "batches": dg.MetadataValue.table(rows, schema=BATCHES_TABLE),
            }
        )

    @dg.multi_asset(
        name=f"{settings.name}__collect",
        specs=[
            dg.AssetSpec(
                names.batch_results,
                deps=[submitted_batches],
                kinds={"parquet"},
                description="One row per request that succeeded "
                "(<data_root>/results/input_file=<name>/).",
                **common,
            ).with_io_manager_key(names.io_manager),
            dg.AssetSpec(
                names.batch_errors,
                deps=[submitted_batches],
                kinds={"parquet"},
                description="One row per request that did not succeed, with its stage "
                "(<data_root>/errors/input_file=<name>/).",
                **common,
            ).with_io_manager_key(names.io_manager),
            dg.AssetSpec(
                names.batch_outcomes,
                deps=[names.batch_results, names.batch_errors],
                kinds={"parquet", "duckdb"},
                skippable=True,
                description="One row per request of the original file with its final outcome "
                "across every retry wave: the latest success, else the latest error "
                "(<data_root>/outcomes/original_file=<original>/).",
                **common,
            ).with_io_manager_key(names.io_manager),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                INVARIANT_CHECK,
                asset=names.batch_results,
                blocking=True,
                description="Each line of the input file is in exactly one row of results "
                "or errors.",
            ),
            dg.AssetCheckSpec(
                ERROR_RATE_CHECK,
                asset=names.batch_errors,
                description="Warns when the share of failed requests passes max_error_rate.",
            ),
        ],
        partitions_def=partitions,
        can_subset=False,
        pool=settings.gateway.pool,
        required_resource_keys={gateway_key, data_key},
        # retries only what may pass (is_transient); a batch output answering 404 is tried
        # OUTPUT_ATTEMPTS times in all, so one run ends with it read or recorded as missing
        retry_policy=dg.RetryPolicy(
            max_retries=OUTPUT_ATTEMPTS - 1, delay=5, backoff=dg.Backoff.EXPONENTIAL
        ),
    )
    def collected(
        context: dg.AssetExecutionContext,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        gateway: GatewayResource = getattr(context.resources, gateway_key)
        data: DataRootResource = getattr(context.resources, data_key)
        layout, store, name = data.layout(), data.store(), context.partition_key
        try:
            # the inbox file must still be what was taken: a producer that went on writing
            # after the file was taken lost the rest, and that must not pass silently
            drift = InputRegistry(layout).drift(name)
            with storage_errors_told(f"collecting {name}"):
                with gateway.client() as client, gateway.azure_blobs(settings.providers) as blobs:
                    report = collect_partition(
                        client, layout, store, name, prices=price_table(settings), blobs=blobs
                    )
                    for warning in report.warnings:
                        context.log.warning(f"{name}: {warning}")
                    if settings.collect.delete_files_after and report.invariant.passed:
                        for problem in delete_batch_files(client, store, name, blobs):
                            context.log.warning(f"cleanup: {problem}")
                outcomes = (
                    build_outcomes(layout, attempt_of(name)[0])
                    if report.invariant.passed and drift is None
                    else None
                )
        except BatchPipelineError as exc:
            raise failure(exc, name, "writing results", settings) from exc
        if drift is not None:
            context.log.error(drift)
        yield from collect_events(
            names, layout, report, outcomes, settings.alerts.max_error_rate, drift=drift
        )

    return PipelineAssets(inbox, batch_input, submitted_batches, collected)


def input_source(settings: PipelineSettings, layout: DataLayout, name: str) -> InputSource:
    """A partition's input: its JSONL file, or its table with the template its rows take (its
    own <name>.template.yaml in the inbox, else the instance's template)."""
    path = InputRegistry(layout).source(name)
    if not is_table(path):
        return path
    sidecar = layout.template_file(name)
    if sidecar.exists():
        template = load_template(sidecar.read_text(), where=str(sidecar))
    elif settings.template is not None:
        template = settings.template
    elif settings.template_file is not None:
        template = load_template(Path(settings.template_file))
    else:
        raise TemplateError(
            f"{name}: a table needs a template: put {sidecar.name} beside it in the inbox, "
            f"or set the instance's template"
        )
    return TableInput(path, template)


def price_table(settings: PipelineSettings) -> PriceTable:
    """The shipped prices, then the instance's prices_file, then its `prices`."""
    return PriceTable.load(settings.prices_file, settings.prices)


def queue_gate(
    instance: dg.DagsterInstance,
    names: PipelineNames,
    client: BifrostClient,
    store: ManifestStore,
    caps: dict[str, int],
) -> QueueGate:
    """A gate over what is in flight now: the batches of capped models in every uncollected
    partition are read again from the gateway (and recorded) before their tokens are counted."""
    manifests = []
    for other in uncollected_submissions(instance, names):
        manifest = refresh_statuses(client, store, other, only=lambda r: queue_key(r) in caps)
        if manifest is not None:
            manifests.append(manifest)
    return QueueGate(manifests, caps)


def collect_events(
    names: PipelineNames,
    layout: DataLayout,
    report: CollectReport,
    outcomes: OutcomesFile | None,
    max_error_rate: float,
    *,
    drift: str | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Materializations of the three tables and the invariant and error-rate checks of one
    collect (outcomes only when the invariant held). `drift`: how the inbox file changed after
    it was taken, which fails the invariant check with that line."""
    by_stage = ", ".join(f"{k} {v}" for k, v in sorted(report.errors_by_stage.items())) or "none"
    summary = (
        f"**{report.results_rows}** results, **{report.errors_rows}** errors ({by_stage}), "
        f"{report.total_tokens:,} tokens, ${report.cost_usd:.4f} at batch prices, "
        f"{len(report.batches)} batch(es)."
        + (f" **{len(report.warnings)} warning(s)** (see batch_errors)." if report.warnings else "")
    )
    yield dg.MaterializeResult(
        asset_key=names.batch_results,
        metadata={
            "dagster/row_count": report.results_rows,
            "path": dg.MetadataValue.path(relative(layout, report.results_path)),
            "dagster/column_schema": table_schema(parquet_schema(report.results_path)),
            "summary": dg.MetadataValue.md(summary),
            "prompt_tokens": report.prompt_tokens,
            "completion_tokens": report.completion_tokens,
            "total_tokens": report.total_tokens,
            "cost_usd": round(report.cost_usd, 6),
            "unpriced_models": ", ".join(report.unpriced_models) or "none",
            # the batches made; a shard cancelled before its create had none
            "batch_ids": dg.MetadataValue.json(
                sorted(b.batch_id for b in report.batches.values() if b.batch_id)
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=names.batch_errors,
        metadata={
            "dagster/row_count": report.errors_rows,
            "path": dg.MetadataValue.path(relative(layout, report.errors_path)),
            "dagster/column_schema": table_schema(parquet_schema(report.errors_path)),
            "errors_by_stage": dg.MetadataValue.json(report.errors_by_stage),
            "dropped_output_lines": report.dropped_lines,
            "gateway_warnings": dg.MetadataValue.md(
                "\n".join(f"- {w}" for w in report.warnings) or "none"
            ),
        },
    )
    if outcomes is not None:
        yield dg.MaterializeResult(
            asset_key=names.batch_outcomes,
            metadata={
                "dagster/row_count": outcomes.rows,
                "path": dg.MetadataValue.path(relative(layout, outcomes.path)),
                "original_file": outcomes.original,
                "attempts": dg.MetadataValue.json(outcomes.attempts),
            },
        )
    inv = report.invariant
    yield dg.AssetCheckResult(
        check_name=INVARIANT_CHECK,
        asset_key=names.batch_results,
        passed=inv.passed and drift is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=drift or inv.describe(),
        metadata={
            "input_unchanged": drift is None,
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
        asset_key=names.batch_errors,
        passed=rate.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=rate.description,
        metadata={"errors_by_stage": dg.MetadataValue.json(report.errors_by_stage)},
    )
