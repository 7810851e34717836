"""Collecting a finished input file into its results and errors Parquet, in one streaming pass.

Each provider's results are read the right way (BIFROST-NOTES.md section 5): OpenAI style
downloads the output file *and* the error file (Bifrost's /results drops the error file),
Anthropic style reads /results. Whatever a batch did not answer is accounted for by
`BatchCollector.finish` (expired, canceled, batch failure, missing), and the invariant is then
verified from the written Parquet files themselves. A file's batches are downloaded a few at a
time ahead of the conversion, which writes them in order into one pair of Parquet files.

A gateway that lies is told, never trusted nor waited on forever: output lines it repeats or
that name requests of no batch are dropped with a warning, requests without a line become
`missing` rows with a warning, and an ended batch whose output answers 404 fails the collect
(worth another attempt) until the manifest counts OUTPUT_ATTEMPTS such collects; then whatever
was unreadable becomes `missing` rows saying why. A local file error stops the collect as the
package's StorageFailed (StorageFull for a full disk), naming its cause.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from batch_pipeline.operations.failures import storage_errors_told
from batch_pipeline.operations.poll import GONE_STATUS, refresh_statuses
from batch_pipeline.operations.retry import attempt_of
from batch_pipeline.prices import PriceTable
from batch_pipeline.providers import provider_traits
from batch_pipeline.results import BatchCollector, BatchContext, CollectStats, PartitionWriter
from batch_pipeline.results.blocks import read_blocks
from batch_pipeline.results.enrich import enrich
from batch_pipeline.results.structured import StructuredOutput

SAMPLE = 20
PARALLEL_DOWNLOADS = 4  # batches of a file downloaded at once during a collect
RESULTS_DOCUMENT = "results"
# Collects that may meet an ended batch's output answering 404 before its unread requests are
# recorded as missing (the collect step's retry policy makes as many attempts in one run).
OUTPUT_ATTEMPTS = 3


class CollectError(BatchPipelineError):
    """The input file cannot be collected yet (or at all); the message says why."""


class OutputUnavailable(CollectError):
    """An ended batch's output answered 404; another collect may find it (a gateway still
    publishing it), up to OUTPUT_ATTEMPTS counted in the manifest."""

    retryable = True


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
    warnings: list[str] = field(default_factory=list)  # what the gateway's output got wrong

    @property
    def dropped_lines(self) -> int:
        """Output lines dropped: a custom_id repeated, or not one of its batch's requests."""
        return sum(b.duplicates_ignored + b.unknown_ids_ignored for b in self.batches.values())


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
    the tokens the provider reported; `blobs` reads the error blobs of Azure blob batches. One
    collect of a file runs at a time; it first sweeps
    what a killed one left behind. A local file error is raised as StorageFailed.
    """
    try:
        with storage_errors_told(f"collecting {name}"), store.exclusive(name, "collect"):
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
    warnings: list[str] = []
    unavailable: list[str] = []  # batches whose output answered 404 this time, before the last
    cost, unpriced = 0.0, set()
    original, attempt = attempt_of(name)
    structured = StructuredOutput.of_template(plan.template)
    keys = plan.keys_path
    with (
        storage_errors_told(f"writing results of {name} under {layout.root}"),
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
        records = [manifest.shards[s.shard_id] for s in plan.shards]  # type: ignore[union-attr]
        fetched = _fetch_ahead(client, blobs, records, downloads)
        for shard, record, output in zip(plan.shards, records, fetched, strict=True):
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
            not_found = _feed(collector, output)
            lost, again = _settle(store, name, record, not_found)
            unavailable += [again] if again else []
            told = collector.finish(
                status=record.status or "", batch_errors=record.batch_errors, lost=lost
            )
            batches[record.batch_id or shard.shard_id] = told
            warnings += output_warnings(record.batch_id or shard.shard_id, told, lost)
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
        if unavailable:  # raised inside the writer, so nothing of this attempt is published
            more = f" (and {len(unavailable) - 1} more batch(es))" if len(unavailable) > 1 else ""
            raise OutputUnavailable(
                f"{name}: {unavailable[0]}{more}; collected again up to {OUTPUT_ATTEMPTS} times, "
                "then its unread requests are recorded as missing"
            )
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
        warnings=warnings,
    )


def output_warnings(batch: str, stats: CollectStats, lost: str | None) -> list[str]:
    """One line per thing a batch's output got wrong, naming the batch and the count."""
    found = []
    if stats.duplicates_ignored:
        found.append(
            f"batch {batch}: dropped {stats.duplicates_ignored} output line(s) repeating a "
            "custom_id already read"
        )
    if stats.unknown_ids_ignored:
        found.append(
            f"batch {batch}: dropped {stats.unknown_ids_ignored} output line(s) whose custom_id "
            "is not one of this batch's requests"
        )
    if stats.unparseable_lines:
        found.append(
            f"batch {batch}: {stats.unparseable_lines} output line(s) could not be read "
            f"(first: {', '.join(stats.unparseable_refs)})"
        )
    missing = stats.by_stage.get("missing", 0)
    if lost is not None:
        found.append(f"batch {batch}: {lost}; {missing} request(s) recorded as missing")
    elif missing:
        found.append(
            f"batch {batch}: no result line for {missing} of {stats.expected} request(s); "
            "recorded as missing"
        )
    return found


def delete_batch_files(
    client: BifrostClient,
    store: ManifestStore,
    name: str,
    blobs: AzureBlobClient | None = None,
) -> list[str]:
    """Delete an input file's uploaded shards and provider output files (after a collect):
    gateway files by id, and Azure blobs (the shard put as a blob, the output and error blobs)
    by URL. A shard is marked done once all of its own deletes succeeded.

    Failures are reported, not raised: the results are safe in Parquet already.
    """
    problems: list[str] = []
    manifest = store.load(name)
    for record in manifest.shards.values() if manifest else []:
        if record.files_deleted:
            continue
        before = len(problems)
        ids = [record.input_file_id, record.output_file_id, record.error_file_id]
        for file_id in filter(None, ids):
            try:
                client.delete_file(file_id, provider=record.provider)
            except GatewayError as exc:
                if not isinstance(exc, NotFoundError):
                    problems.append(f"{file_id}: {exc}")
        for url in filter(None, [record.input_blob, record.output_blob, record.error_blob]):
            problems.extend(_delete_blob(blobs, url))
        if len(problems) == before:
            store.record(name, record.shard_id, files_deleted=True)
    return problems


def _delete_blob(blobs: AzureBlobClient | None, url: str) -> list[str]:
    """Delete one blob; what went wrong, in one line, if it could not be deleted."""
    if blobs is None:
        return [
            f"{url}: not deleted; deleting blobs needs providers.azure_input: blob and the SAS "
            "token in the variable providers.azure_blob_sas_env names"
        ]
    try:
        blobs.delete_blob(url)
    except BlobStorageError as exc:
        return [str(exc)]
    return []


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


@dataclass(frozen=True)
class _Download:
    """One file of a terminal batch's output: what it is (`results` being a /results document,
    anything else a file of result lines), where it goes on local disk, and how to get it."""

    what: str
    dest: Path
    get: Callable[..., object]


def _fetch_ahead(
    client: BifrostClient,
    blobs: AzureBlobClient | None,
    records: list[ShardRecord],
    downloads: Path,
) -> Iterator[list[tuple[str, Future[Path]]]]:
    """Each batch's output files, in order, each a future of its local copy, while up to
    PARALLEL_DOWNLOADS batches are downloaded concurrently ahead of the one being converted: a
    batch's files come one after the other, and each can be converted as soon as it is on disk,
    so collect keeps the network and Arrow's conversion threads busy together."""
    with ThreadPoolExecutor(PARALLEL_DOWNLOADS, thread_name_prefix="collect") as pool:
        ahead: deque[tuple[Future[None], list[tuple[str, Future[Path]]]]] = deque()
        upcoming = iter(records)
        try:
            while True:
                while len(ahead) < PARALLEL_DOWNLOADS:
                    record = next(upcoming, None)
                    if record is None:
                        break
                    wanted = _batch_output(client, blobs, record, downloads)
                    files: list[tuple[str, Future[Path]]] = [(w.what, Future()) for w in wanted]
                    task = pool.submit(_download_in_order, wanted, [f for _, f in files])
                    ahead.append((task, files))
                if not ahead:
                    return
                yield ahead[0][1]
                ahead.popleft()
        finally:  # whatever was downloaded and not read (the current batch's included) goes
            for task, files in ahead:
                if not task.cancel():
                    task.result()  # a download under way ends before its file is deleted
                for _, file in files:
                    if file.done() and file.exception() is None:
                        file.result().unlink(missing_ok=True)


def _download_in_order(wanted: list[_Download], files: list[Future[Path]]) -> None:
    """Download each file in turn, settling its future (NotFoundError included) as it ends; a
    failure other than a 404 ends the batch's downloads, and is every later file's outcome."""
    for index, (download, file) in enumerate(zip(wanted, files, strict=True)):
        try:
            download.get(dest=download.dest)
        except NotFoundError as exc:
            file.set_exception(exc)
        except BaseException as exc:
            for later in files[index:]:
                later.set_exception(exc)
            return
        else:
            file.set_result(download.dest)


def _batch_output(
    client: BifrostClient, blobs: AzureBlobClient | None, record: ShardRecord, downloads: Path
) -> list[_Download]:
    """The files of a terminal batch's output, the way its provider serves them: an Azure blob
    batch's answers through /results (Bifrost reads the output blob) and its failed requests
    from the error blob, which /results leaves out."""
    if not record.batch_id or record.status == GONE_STATUS:
        return []
    provider = record.provider
    traits = provider_traits(provider)
    # scratch copies, read once and deleted: a crash makes the next collect download them again
    results = partial(
        client.download_batch_results, record.batch_id, provider=provider, durable=False
    )
    wanted: list[_Download] = []
    if record.output_blob or record.error_blob:
        if record.output_blob:
            wanted.append(
                _Download(RESULTS_DOCUMENT, downloads / f"results-{record.shard_id}.json", results)
            )
        if record.error_blob:
            if blobs is None:
                raise CollectError(
                    f"batch {record.batch_id} wrote its failed requests to a blob; reading it "
                    "needs providers.azure_input: blob and the SAS token in the variable "
                    "providers.azure_blob_sas_env names"
                )
            error_blob = partial(_get_blob, blobs, record.batch_id, record.error_blob)
            dest = downloads / f"error-{record.shard_id}.jsonl"
            wanted.append(_Download(f"error blob {record.error_blob}", dest, error_blob))
    elif traits.results_source == "files":
        for kind, file_id in (("output", record.output_file_id), ("error", record.error_file_id)):
            if file_id:
                wanted.append(
                    _Download(
                        f"{kind} file {file_id}",
                        downloads / f"{kind}-{record.shard_id}.jsonl",
                        partial(
                            client.download_file_content,
                            file_id,
                            provider=provider,
                            durable=False,
                        ),
                    )
                )
    elif record.status != "failed" or traits.results_when_failed:
        wanted.append(
            _Download(RESULTS_DOCUMENT, downloads / f"results-{record.shard_id}.json", results)
        )
    return wanted


def _get_blob(blobs: AzureBlobClient, batch_id: str, url: str, *, dest: Path) -> None:
    """Get a batch's blob to `dest`; a storage failure is the collect's, naming the batch."""
    try:
        blobs.get_blob(url, dest)
    except BlobStorageError as exc:
        raise CollectError(f"batch {batch_id}: {exc}") from None


def _settle(
    store: ManifestStore,
    name: str,
    record: ShardRecord,
    not_found: list[tuple[str, NotFoundError]],
) -> tuple[str | None, str | None]:
    """What a batch's 404s mean: (why part of its output is lost, why it must be read again).

    An output answering 404 counts one attempt in the manifest; before OUTPUT_ATTEMPTS it is to
    be read again (the collect then fails with OutputUnavailable, after reading every other
    batch, so all of them count this attempt); at the last one, what answered is read and the
    rest reported lost."""
    if not not_found:
        return None, None
    attempt = record.output_not_found + 1
    store.record(name, record.shard_id, output_not_found=attempt)
    if attempt < OUTPUT_ATTEMPTS:
        exc = not_found[0][1]
        again = (
            f"batch {record.batch_id} ended {record.status} but {exc.method} {exc.path} answered "
            f"404 (attempt {attempt} of {OUTPUT_ATTEMPTS})"
        )
        return None, again
    lost = " and ".join(what for what, _ in not_found)
    return f"its {lost} answered 404 at {attempt} attempts", None


def _feed(
    collector: BatchCollector, files: list[tuple[str, Future[Path]]]
) -> list[tuple[str, NotFoundError]]:
    """Give a batch's output files to its collector as each is downloaded, deleting each once
    read; what answered 404 instead."""
    not_found: list[tuple[str, NotFoundError]] = []
    for source, file in files:
        try:
            path = file.result()
        except NotFoundError as exc:
            not_found.append((source, exc))
            continue
        try:
            if source == RESULTS_DOCUMENT:
                collector.add_items(
                    item.model_dump(mode="json", exclude_none=True)
                    for item in iter_result_items(path)
                )
            else:
                with open(path, "rb", buffering=0) as handle:
                    collector.add_blocks(read_blocks(handle), source=source)
        finally:
            path.unlink(missing_ok=True)
    return not_found


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
    missing, duplicates, unexpected = _compare_lines(expected, actual)
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


def _compare_lines(
    expected: np.ndarray, actual: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The expected lines not in `actual`, the lines in it more than once, and the lines in it
    not expected, each sorted and distinct. Counted in one table indexed by line number (line
    numbers are dense from 1), as sorting and set differences cost seconds at a million lines."""
    top = int(expected.max(initial=0))
    inside = (actual >= 0) & (actual <= top)
    counts = np.bincount(actual[inside], minlength=top + 1)
    wanted = np.zeros(top + 1, dtype=bool)
    wanted[expected] = True
    outside, outside_counts = np.unique(actual[~inside], return_counts=True)
    missing = np.flatnonzero(wanted & (counts == 0))
    duplicates = np.union1d(np.flatnonzero(counts > 1), outside[outside_counts > 1])
    unexpected = np.union1d(np.flatnonzero(~wanted & (counts > 0)), outside)
    return missing, duplicates, unexpected
