"""Collecting a finished input file into its results and errors Parquet, in one streaming pass.

Each provider's results are read the right way (BIFROST-NOTES.md section 5): OpenAI style
downloads the output file *and* the error file (Bifrost's /results drops the error file),
Anthropic style reads /results. Whatever a batch did not answer is accounted for by
`BatchCollector.finish` (expired, canceled, batch failure, missing), and the invariant is then
verified from the written Parquet files themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import orjson

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.gateway import (
    BifrostClient,
    GatewayError,
    NotFoundError,
    iter_result_items,
)
from batch_pipeline.gateway.azure_blob import AzureBlobClient, BlobStorageError
from batch_pipeline.inputs import InputPlan, read_shard_index
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import Manifest, ManifestBusy, ManifestStore, ShardRecord
from batch_pipeline.ledger.storage import DataPath, is_local, read_parquet, scratch_for
from batch_pipeline.operations.poll import GONE_STATUS, refresh_statuses
from batch_pipeline.operations.retry import attempt_of
from batch_pipeline.prices import PriceTable
from batch_pipeline.providers import provider_traits
from batch_pipeline.results import BatchCollector, BatchContext, CollectStats, PartitionWriter
from batch_pipeline.results.enrich import enrich
from batch_pipeline.results.structured import StructuredOutput

SAMPLE = 20


class CollectError(BatchPipelineError):
    """The input file cannot be collected yet (or at all); the message says why."""


@dataclass
class InvariantReport:
    """Every input line in exactly one row of results or errors."""

    expected: int
    results_rows: int
    errors_rows: int
    missing_lines: list[int] = field(default_factory=list)
    missing_count: int = 0
    duplicate_lines: list[int] = field(default_factory=list)
    duplicate_count: int = 0
    unexpected_lines: list[int | None] = field(default_factory=list)
    unexpected_count: int = 0

    @property
    def passed(self) -> bool:
        return (
            self.missing_count == 0
            and self.duplicate_count == 0
            and self.unexpected_count == 0
            and self.results_rows + self.errors_rows == self.expected
        )

    def describe(self) -> str:
        if self.passed:
            return f"all {self.expected} input lines accounted for"
        return (
            f"{self.expected} input lines, {self.results_rows} results + {self.errors_rows} "
            f"errors rows; missing {self.missing_count} (e.g. lines {self.missing_lines[:5]}), "
            f"twice {self.duplicate_count} (e.g. {self.duplicate_lines[:5]}), "
            f"unexpected {self.unexpected_count} (e.g. {self.unexpected_lines[:5]})"
        )


@dataclass
class CollectReport:
    name: str
    results_path: DataPath
    errors_path: DataPath
    results_rows: int
    errors_rows: int
    errors_by_stage: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    batches: dict[str, CollectStats]
    invariant: InvariantReport
    cost_usd: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)


def load_plan(layout: DataLayout, name: str) -> InputPlan:
    plan = InputPlan.load(layout.staging(name))
    if plan is None:
        raise CollectError(
            f"{name}: no validated shards in {layout.staging(name)}; run batch_input first"
        )
    return plan


def collect_partition(
    client: BifrostClient,
    layout: DataLayout,
    store: ManifestStore,
    name: str,
    *,
    prices: PriceTable | None = None,
    collected_at: datetime | None = None,
    blobs: AzureBlobClient | None = None,
) -> CollectReport:
    """Write `results` and `errors` Parquet for input file `name`; its batches must be terminal.

    The batches' status is read again from the gateway and recorded first: the status sensor
    that asked for this collect writes nothing. Spend is priced per batch (one model each) from
    the tokens the provider reported; `blobs` reads the error blobs of Azure blob batches. One collect of a file runs at a time; it first sweeps
    what a killed one left behind.
    """
    try:
        with store.exclusive(name, "collect"):
            _sweep_leftovers(layout, name)
            refresh_statuses(client, store, name)
            return _collect(
                client, layout, store, name, prices or PriceTable(), collected_at, blobs
            )
    except ManifestBusy as exc:
        raise CollectError(str(exc)) from None


def _sweep_leftovers(layout: DataLayout, name: str) -> None:
    """Hidden temp files and downloads of an interrupted collect (no reader ever saw them)."""
    if not is_local(layout.root):
        return  # temp files live in private local folders; S3 never shows a partial object
    for target in (layout.results_file(name), layout.errors_file(name)):
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    downloads = layout.staging(name) / "downloads"
    if downloads.is_dir():
        for leftover in downloads.iterdir():
            leftover.unlink(missing_ok=True)


def _collect(
    client: BifrostClient,
    layout: DataLayout,
    store: ManifestStore,
    name: str,
    prices: PriceTable,
    collected_at: datetime | None,
    blobs: AzureBlobClient | None,
) -> CollectReport:
    plan = load_plan(layout, name)
    manifest = store.load(name)
    if manifest is None and plan.shards:
        raise CollectError(f"{name}: nothing was submitted yet")
    pending = [s.shard_id for s in plan.shards if not _terminal(manifest, s.shard_id)]
    if pending:
        raise CollectError(f"{name}: batches of shards {', '.join(pending)} are not finished yet")

    results_path, errors_path = layout.results_file(name), layout.errors_file(name)
    batches: dict[str, CollectStats] = {}
    cost, unpriced = 0.0, set()
    original, attempt = attempt_of(name)
    structured = StructuredOutput.of_template(plan.template)
    keys = plan.keys_path
    with (
        # downloads sit in staging/<name>/downloads on disk (swept after a kill), else in temp
        scratch_for(layout.staging(name) / "downloads" / "output.jsonl") as downloads,
        PartitionWriter(
            results_path,
            errors_path,
            collected_at=collected_at or datetime.now(UTC),
            original_file=original,
            attempt=attempt,
            complete=None if keys is None else partial(enrich, keys=keys, structured=structured),
        ) as writer,
    ):
        _add_rejected(writer, plan)
        for shard in plan.shards:
            record = manifest.shards[shard.shard_id]  # type: ignore[union-attr]
            ctx = BatchContext(
                record.batch_id,
                shard.provider,
                shard.model,
                shard.endpoint,
                price=prices.price(shard.provider, shard.model),
                structured=structured,
            )
            collector = BatchCollector(writer, ctx, read_shard_index(shard))
            before = writer.stats
            if record.batch_id and record.status != GONE_STATUS:
                _read_batch_output(client, record, collector, downloads, blobs)
            batches[record.batch_id or shard.shard_id] = collector.finish(
                status=record.status or "", batch_errors=record.batch_errors
            )
            after = writer.stats
            spent = prices.cost(
                shard.provider,
                shard.model,
                after.prompt_tokens - before.prompt_tokens,
                after.completion_tokens - before.completion_tokens,
            )
            if spent is None:
                unpriced.add(f"{shard.provider}/{shard.model}")
            else:
                cost += spent
    stats = writer.stats
    return CollectReport(
        name=name,
        results_path=results_path,
        errors_path=errors_path,
        results_rows=stats.results_rows,
        errors_rows=stats.errors_rows,
        errors_by_stage=dict(stats.errors_by_stage),
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        total_tokens=stats.total_tokens,
        batches=batches,
        invariant=check_invariant(plan, results_path, errors_path),
        cost_usd=cost,
        unpriced_models=sorted(unpriced),
    )


def delete_batch_files(client: BifrostClient, store: ManifestStore, name: str) -> list[str]:
    """Delete an input file's uploaded shards and provider output files (after a collect).

    Failures are reported, not raised: the results are safe in Parquet already.
    """
    problems = []
    manifest = store.load(name)
    for record in manifest.shards.values() if manifest else []:
        if record.files_deleted:
            continue
        ids = [record.input_file_id, record.output_file_id, record.error_file_id]
        for file_id in filter(None, ids):
            try:
                client.delete_file(file_id, provider=record.provider)
            except GatewayError as exc:
                if not isinstance(exc, NotFoundError):
                    problems.append(f"{file_id}: {exc}")
        if not problems:
            store.record(name, record.shard_id, files_deleted=True)
    return problems


def _terminal(manifest: Manifest | None, shard_id: str) -> bool:
    record = manifest.shards.get(shard_id) if manifest else None
    return bool(record and record.terminal)


def _add_rejected(writer: PartitionWriter, plan: InputPlan) -> None:
    """Input lines refused by validation (policy `skip`) become `stage=input` error rows."""
    if not plan.rejected_path:
        return
    with plan.rejected_path.open("rb") as lines:
        for line in lines:
            rejected = orjson.loads(line)
            writer.add_error(
                custom_id=rejected.get("custom_id"),
                input_line=rejected["input_line"],
                stage="input",
                error_code="invalid_input",
                error_message=rejected["reason"],
                retryable=False,
                raw=rejected.get("raw"),
            )


def _read_batch_output(
    client: BifrostClient,
    record: ShardRecord,
    collector: BatchCollector,
    downloads: Path,
    blobs: AzureBlobClient | None,
) -> None:
    """Feed a terminal batch's output to the collector, the way its provider serves it."""
    provider = record.provider
    traits = provider_traits(provider)
    if record.output_blob or record.error_blob:
        _read_blob_batch(client, record, collector, downloads, blobs)
    elif traits.results_source == "files":
        for kind, file_id in (("output", record.output_file_id), ("error", record.error_file_id)):
            if not file_id:
                continue
            dest = downloads / f"{kind}-{record.shard_id}.jsonl"
            client.download_file_content(file_id, provider=provider, dest=dest)
            try:
                with open(dest, "rb") as lines:
                    collector.add_lines(lines, source=f"{kind} file {file_id}")
            finally:
                dest.unlink(missing_ok=True)
    elif record.status != "failed" or traits.results_when_failed:
        _read_results_endpoint(client, record, collector, downloads)


def _read_results_endpoint(
    client: BifrostClient, record: ShardRecord, collector: BatchCollector, downloads: Path
) -> None:
    """Feed the items of a batch's /results answer, saved to disk first, to the collector."""
    dest = downloads / f"results-{record.shard_id}.json"
    client.download_batch_results(record.batch_id, provider=record.provider, dest=dest)  # type: ignore[arg-type]
    try:
        collector.add_items(
            item.model_dump(mode="json", exclude_none=True) for item in iter_result_items(dest)
        )
    finally:
        dest.unlink(missing_ok=True)


def _read_blob_batch(
    client: BifrostClient,
    record: ShardRecord,
    collector: BatchCollector,
    downloads: Path,
    blobs: AzureBlobClient | None,
) -> None:
    """An Azure blob batch: its answers through /results (Bifrost reads the output blob), its
    failed requests from the error blob, which /results leaves out."""
    if record.error_blob and blobs is None:
        raise CollectError(
            f"batch {record.batch_id} wrote its failed requests to a blob; reading it needs "
            "providers.azure_input: blob and the SAS token in the variable "
            "providers.azure_blob_sas_env names"
        )
    if record.output_blob:
        _read_results_endpoint(client, record, collector, downloads)
    if not record.error_blob or blobs is None:
        return
    dest = downloads / f"error-{record.shard_id}.jsonl"
    try:
        blobs.get_blob(record.error_blob, dest)
        with open(dest, "rb") as lines:
            collector.add_lines(lines, source=f"error blob {record.error_blob}")
    except BlobStorageError as exc:
        raise CollectError(f"batch {record.batch_id}: {exc}") from None
    finally:
        dest.unlink(missing_ok=True)


def expected_lines(plan: InputPlan) -> np.ndarray:
    """The input line numbers the plan accounted for: every shard's requests plus rejects."""
    parts = [np.fromiter(read_shard_index(s).values(), dtype=np.int64) for s in plan.shards]
    if plan.rejected_path:
        with plan.rejected_path.open("rb") as lines:
            parts.append(
                np.fromiter((orjson.loads(x)["input_line"] for x in lines), dtype=np.int64)
            )
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def check_invariant(
    plan: InputPlan, results_path: DataPath, errors_path: DataPath
) -> InvariantReport:
    """Read back both Parquet files and prove each input line is in exactly one row."""
    expected = expected_lines(plan)
    columns = [
        read_parquet(p, columns=["input_line"]).column(0) for p in (results_path, errors_path)
    ]
    results_rows, errors_rows = len(columns[0]), len(columns[1])
    lines = np.concatenate([c.to_numpy(zero_copy_only=False) for c in columns])
    nulls = int(np.isnan(lines).sum()) if lines.dtype.kind == "f" else 0
    actual = lines[~np.isnan(lines)].astype(np.int64) if nulls else lines.astype(np.int64)
    values, counts = np.unique(actual, return_counts=True)
    duplicates = values[counts > 1]
    missing = np.setdiff1d(expected, values, assume_unique=False)
    unexpected = np.setdiff1d(values, expected)
    return InvariantReport(
        expected=plan.total_lines,
        results_rows=results_rows,
        errors_rows=errors_rows,
        missing_lines=missing[:SAMPLE].tolist(),
        missing_count=len(missing),
        duplicate_lines=duplicates[:SAMPLE].tolist(),
        duplicate_count=len(duplicates),
        unexpected_lines=[None] * min(nulls, SAMPLE) + unexpected[:SAMPLE].tolist(),
        unexpected_count=nulls + len(unexpected),
    )
