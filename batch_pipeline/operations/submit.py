"""Submitting an input file's shards exactly once: upload, record intent, create, record the id.

A create is never retried blindly. Its outcome is either known (an id, or a refusal the gateway
answered with a 4xx: nothing was created) or unknown (timeout, connection drop, 5xx). An unknown
outcome is reconciled through the gateway by the shard id carried in the batch metadata; where
the provider keeps no metadata, or the batch cannot be found yet, submission stops with a clear
message instead of risking a second batch (and a second bill).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.gateway import (
    BatchCreateResponse,
    BatchView,
    BifrostClient,
    GatewayConnectionError,
    GatewayError,
    GatewayStatusError,
    GatewayTimeoutError,
    RateLimitError,
)
from batch_pipeline.gateway.azure_blob import AzureBlobClient, BlobStorageError
from batch_pipeline.inputs import InputOptions, InputPlan, Shard
from batch_pipeline.inputs.native import gemini_input_file
from batch_pipeline.inputs.prepare import InputSource, prepare, source_sha256
from batch_pipeline.ledger.manifest import ManifestBusy, ManifestStore, ShardRecord
from batch_pipeline.ledger.storage import DataPath, Hold, LockLost, local_copy
from batch_pipeline.operations.costs import Estimate
from batch_pipeline.operations.failures import storage_errors_told
from batch_pipeline.operations.poll import status_fields
from batch_pipeline.operations.queue_limits import QueueGate
from batch_pipeline.providers import ProviderOptions, SubmitMode, provider_traits

log = logging.getLogger(__name__)

SHARD_KEY = "bp_shard"
INPUT_KEY = "bp_input"
# A 429 on create is a refusal (nothing was created), so waiting and asking again is safe.
MAX_RATE_LIMIT_WAIT_SECONDS = 120.0
# After a create whose answer was lost, a gateway may list the batch only a little later.
CREATE_SETTLE_SECONDS = 60.0
PARALLEL_UPLOADS = 4  # shard files uploaded at once, ahead of their creates


class SubmissionError(BatchPipelineError):
    """Submission stopped; the message says why and what to do."""


class SubmissionUncertain(SubmissionError):
    """A create may or may not have made a batch; submitting again could pay twice."""


@dataclass(frozen=True)
class SubmitOutcome:
    shard_id: str
    batch_id: str | None
    reused: bool
    waiting: str | None = None  # set when a queue limit holds the shard back


def submit_plan(
    client: BifrostClient,
    store: ManifestStore,
    plan: InputPlan,
    *,
    completion_window: str = "24h",
    assume_not_created: Collection[str] = (),
    adopt: Mapping[str, str] | None = None,
    estimates: Mapping[str, Estimate] | None = None,
    gate: QueueGate | None = None,
    settle_seconds: float = CREATE_SETTLE_SECONDS,
    options: ProviderOptions | None = None,
    blobs: AzureBlobClient | None = None,
) -> list[SubmitOutcome]:
    """Make sure every shard of `plan` has exactly one batch; reuse the ones it already has.

    `assume_not_created` and `adopt` (shard id -> batch id) resolve an uncertain create by hand.
    `estimates` (by shard id) are recorded in the manifest; `gate` may hold shards back. An
    interrupted create is only taken as "no batch" once `settle_seconds` have passed since it.
    `options` say what some providers need beyond a model (Bedrock's and Vertex's output
    folders, Gemini's and Azure's input); `blobs` puts Azure shards as blobs when
    `azure_input` is `blob`. Two submits of the same file never run at once (the second is
    refused). A local file error is raised as StorageFailed (a create whose answer was not
    recorded is found again by the next submit).
    """
    options = options or ProviderOptions()
    for provider in sorted({shard.provider for shard in plan.shards}):
        missing = options.missing(provider)
        if missing:
            raise SubmissionError(
                f"{plan.input_name}: {provider} batches need the setting(s) providers.{missing} "
                "(see README, Providers); nothing was sent"
            )
        if blobs is None and submit_mode(provider, options) == "blob":
            raise SubmissionError(
                f"{plan.input_name}: azure blob input needs a SAS token in the variable "
                f"{options.azure_blob_sas_env} (providers.azure_blob_sas_env); nothing was sent"
            )
    try:
        with (
            storage_errors_told(f"submitting {plan.input_name}"),
            store.exclusive(plan.input_name, "submit") as hold,
        ):
            register_plan(store, plan, estimates or {})
            ahead = [] if gate is not None else _uploads_ahead(store, plan, options, adopt or {})
            with _UploadsAhead(client, store, plan.input_name, ahead) as uploads:
                return [
                    _submit_shard(
                        client,
                        store,
                        plan.input_name,
                        shard,
                        hold=hold,
                        completion_window=completion_window,
                        assume_not_created=shard.shard_id in assume_not_created,
                        adopted=(adopt or {}).get(shard.shard_id),
                        gate=gate,
                        settle_seconds=settle_seconds,
                        options=options,
                        blobs=blobs,
                        uploads=uploads,
                    )
                    for shard in plan.shards
                ]
    except (ManifestBusy, LockLost) as exc:
        raise SubmissionError(f"{exc}; nothing more was sent") from None


def plan_to_submit(
    store: ManifestStore, name: str, source: InputSource, staging: DataPath, options: InputOptions
) -> InputPlan:
    """The plan of an input (a file, or a table with its template): prepared now, or, once any
    of its shards was sent, the plan those shards came from, untouched (re-sharding then would
    orphan paid batches)."""
    manifest = store.load(name)
    sent = manifest is not None and any(
        s.state != "pending" or s.batch_id for s in manifest.shards.values()
    )
    existing = InputPlan.load(staging) if sent else None
    if existing is None:
        return prepare(source, staging, options)
    if source_sha256(source) != existing.input_sha256:
        raise SubmissionError(
            f"{name}: the input file changed after its batches were submitted; its staging is "
            "kept as submitted. Put the new content under a new file name"
        )
    return existing


def register_plan(
    store: ManifestStore, plan: InputPlan, estimates: Mapping[str, Estimate] | None = None
) -> None:
    """Add the plan's shards to the manifest; refuse if the file changed after submitting."""
    with store.update(plan.input_name, input_sha256=plan.input_sha256) as manifest:
        submitted = [s for s in manifest.shards.values() if s.state != "pending"]
        if manifest.input_sha256 != plan.input_sha256 and submitted:
            raise SubmissionError(
                f"{plan.input_name}: the input file changed after its batches were submitted; "
                "submit the new content under a new file name"
            )
        planned = {s.shard_id for s in plan.shards}
        stray = [s.shard_id for s in submitted if s.shard_id not in planned]
        if stray:
            raise SubmissionError(
                f"{plan.input_name}: shards {', '.join(stray)} were submitted under other "
                "sharding settings; restore them or submit under a new file name"
            )
        manifest.input_sha256 = plan.input_sha256
        manifest.shards = {
            s.shard_id: manifest.shards.get(s.shard_id) or _new_record(s) for s in plan.shards
        }
        for shard_id, estimate in (estimates or {}).items():
            record = manifest.shards[shard_id]
            record.estimated_input_tokens = estimate.input_tokens
            record.estimated_output_tokens = estimate.output_tokens
            record.estimated_cost = estimate.cost


def _new_record(shard: Shard) -> ShardRecord:
    return ShardRecord(
        shard_id=shard.shard_id,
        provider=shard.provider,
        model=shard.model,
        endpoint=shard.endpoint,
        request_count=shard.request_count,
        bytes=shard.bytes,
    )


def _submit_shard(
    client: BifrostClient,
    store: ManifestStore,
    name: str,
    shard: Shard,
    *,
    hold: Hold,
    completion_window: str,
    assume_not_created: bool,
    adopted: str | None,
    gate: QueueGate | None,
    settle_seconds: float,
    options: ProviderOptions,
    blobs: AzureBlobClient | None,
    uploads: _UploadsAhead,
) -> SubmitOutcome:
    manifest = store.load(name)
    assert manifest is not None
    record = manifest.shards[shard.shard_id]
    if record.batch_id:
        return SubmitOutcome(shard.shard_id, record.batch_id, reused=True)
    if record.terminal:
        return SubmitOutcome(
            shard.shard_id, None, reused=False, waiting="cancelled before submission"
        )
    if adopted:
        batch = client.retrieve_batch(adopted, provider=shard.provider)
        _record_batch(client, store, name, shard.shard_id, BatchView.of(batch, shard.provider))
        return SubmitOutcome(shard.shard_id, adopted, reused=True)
    if record.state == "creating" and not assume_not_created:
        found = _reconcile(client, name, record)
        if found is not None:
            _record_batch(client, store, name, shard.shard_id, found)
            return SubmitOutcome(shard.shard_id, found.id, reused=True)
        age = time.time() - (record.intent_at or 0.0)
        if age < settle_seconds:
            raise SubmissionUncertain(
                f"{name}: the create of shard {shard.shard_id} was sent {age:.0f}s ago and its "
                f"batch is not listed yet; re-run after {settle_seconds:.0f}s so a slow create is "
                "not doubled"
            )
        log.info("%s: shard %s has no batch at the gateway; creating it", name, shard.shard_id)

    waiting = gate.admit(record) if gate is not None else None
    if waiting != record.waiting:
        store.record(name, shard.shard_id, waiting=waiting)
    if waiting:
        return SubmitOutcome(shard.shard_id, None, reused=False, waiting=waiting)

    mode = submit_mode(shard.provider, options)
    input_file_id = record.input_file_id
    if mode == "file" and not input_file_id:
        input_file_id = uploads.take(shard)
    input_blob = _put_blob(blobs, name, shard, options) if mode == "blob" else None

    with store.update(name) as manifest:
        current = manifest.shards[shard.shard_id]
        if current.terminal or current.batch_id:  # cancelled or made meanwhile
            return SubmitOutcome(shard.shard_id, current.batch_id, reused=bool(current.batch_id))
        if current.state == "creating" and current.intent_at != record.intent_at:
            # another submit wrote its intent since we looked: only one may create
            raise SubmissionUncertain(
                f"{name}: another submit is creating shard {shard.shard_id}; nothing was sent"
            )
        current.state, current.intent_at = "creating", time.time()
        current.input_blob = input_blob or current.input_blob  # what delete_files_after deletes
    hold.check()  # the submit lock is still ours: no other submit can be creating this shard
    try:
        created = _create(
            client,
            name,
            shard,
            input_file_id,
            completion_window,
            _extra(name, shard, options),
            input_blob,
        )
    except GatewayStatusError as exc:
        if exc.status_code < 500 and exc.status_code != 408:
            # A refusal: nothing was created. Upload again next time, in case the file was
            # what the gateway refused (expired, deleted, from another gateway).
            store.record(name, shard.shard_id, state="pending", intent_at=None, input_file_id=None)
            raise SubmissionError(f"{name}: shard {shard.shard_id} refused: {exc}") from None
        return _after_unknown_outcome(client, store, name, shard, exc)
    except (GatewayTimeoutError, GatewayConnectionError) as exc:
        if not exc.request_sent:
            store.record(name, shard.shard_id, state="pending", intent_at=None)
            raise SubmissionError(f"{name}: shard {shard.shard_id} not sent: {exc}") from None
        return _after_unknown_outcome(client, store, name, shard, exc)
    _record_batch(client, store, name, shard.shard_id, BatchView.of(created, shard.provider))
    return SubmitOutcome(shard.shard_id, created.id, reused=False)


def _record_batch(
    client: BifrostClient, store: ManifestStore, name: str, shard_id: str, view: BatchView
) -> None:
    """Record a shard's batch; cancel it at once if the file was cancelled meanwhile."""
    record = store.record(
        name,
        shard_id,
        state="submitted",
        batch_id=view.id,
        created_at=view.created_at or time.time(),
        **status_fields(view),
    )
    if record.cancel_requested and not record.terminal:
        log.info("%s: cancelling batch %s, asked while it was being created", name, view.id)
        cancel_and_record(client, store, name, record)


def submit_mode(provider: str, options: ProviderOptions) -> SubmitMode:
    """How a provider's shards are sent: uploaded as a file, inline in the create, or put as
    an Azure blob."""
    if provider == "gemini":
        return options.gemini_input
    if provider == "azure" and options.azure_input == "blob":
        return "blob"
    return provider_traits(provider).submit_mode


def _uploads_ahead(
    store: ManifestStore, plan: InputPlan, options: ProviderOptions, adopt: Mapping[str, str]
) -> list[Shard]:
    """The shards this submit will upload as files: no file, no batch, not ended or adopted."""
    manifest = store.load(plan.input_name)
    assert manifest is not None
    return [
        shard
        for shard in plan.shards
        if submit_mode(shard.provider, options) == "file"
        and shard.shard_id not in adopt
        and not (record := manifest.shards[shard.shard_id]).input_file_id
        and not record.batch_id
        and not record.terminal
    ]


class _UploadsAhead:
    """Shard uploads running ahead of their creates, PARALLEL_UPLOADS at a time, in shard order.

    An upload makes nothing that is paid for, so uploads need not wait for the creates: the
    next shards' files travel while a batch is created. Each file id is recorded in the
    manifest as soon as its upload ends, before the loop creates that shard's batch, so a
    refusal, an error or a crash leaves at most the uploads under way unrecorded; the next
    submit reuses the recorded ones.
    """

    def __init__(
        self, client: BifrostClient, store: ManifestStore, name: str, shards: list[Shard]
    ) -> None:
        self._client, self._store, self._name = client, store, name
        self._pool = ThreadPoolExecutor(PARALLEL_UPLOADS, thread_name_prefix="upload")
        self._ahead = {
            s.shard_id: self._pool.submit(_upload_and_record, client, store, name, s)
            for s in shards
        }

    def __enter__(self) -> _UploadsAhead:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        # An interrupt (Ctrl-C, a run's termination) does not wait for the uploads under way.
        interrupted = kind is not None and not issubclass(kind, Exception)
        self._pool.shutdown(wait=not interrupted, cancel_futures=True)

    def take(self, shard: Shard) -> str:
        """The recorded file id of a shard: its upload ahead, else one uploaded now."""
        upload = self._ahead.pop(shard.shard_id, None)
        if upload is not None:
            return upload.result()
        return _upload_and_record(self._client, self._store, self._name, shard)


def _upload_and_record(client: BifrostClient, store: ManifestStore, name: str, shard: Shard) -> str:
    """Upload a shard and record its file id before anything may create its batch; when the
    manifest names a file for the shard already (another submit, which took the lock over,
    recorded its own upload meanwhile), that file stays and is the one the batch is made from."""
    uploaded = _upload(client, shard)
    with store.update(name) as manifest:
        record = manifest.shards[shard.shard_id]
        record.input_file_id = record.input_file_id or uploaded
        return record.input_file_id


def _upload(client: BifrostClient, shard: Shard) -> str:
    """Upload a shard as the provider's batch input file; its file id."""
    with local_copy(shard.path) as shard_file:
        if shard.provider != "gemini":
            return client.upload_file(shard_file, provider=shard.provider).id
        with tempfile.TemporaryDirectory(prefix="batch-pipeline-") as folder:
            keyed = Path(folder) / shard_file.name  # Gemini's own lines: {"key", "request"}
            gemini_input_file(shard_file, keyed)
            return client.upload_file(keyed, provider=shard.provider).id


def _put_blob(
    blobs: AzureBlobClient | None, name: str, shard: Shard, options: ProviderOptions
) -> str:
    """Put a shard as the blob an Azure batch reads; a shard always gets the same blob name, so
    putting it again (after a refused create) replaces it with the same content."""
    assert blobs is not None and options.azure_blob_folder
    url = f"{options.azure_blob_folder.rstrip('/')}/{name}/{shard.shard_id}.jsonl"
    try:
        with local_copy(shard.path) as shard_file:
            blobs.put_blob(url, shard_file)
    except BlobStorageError as exc:
        raise SubmissionError(f"{name}: shard {shard.shard_id} not put as a blob: {exc}") from None
    return url


def _extra(name: str, shard: Shard, options: ProviderOptions) -> dict[str, Any]:
    """The provider's own create fields: Bedrock's role and a job name and output folder of its
    own (Bifrost reads every result object under it), Vertex's output folder, the folder Azure
    writes a blob batch's output and error blobs under (one folder per batch inside it)."""
    # one name per shard of a file: a second create of it is refused by name
    job = f"bp-{re.sub(r'[^A-Za-z0-9]+', '-', name)[:24].strip('-')}-{shard.shard_id}"
    folder = f"{name}/{shard.shard_id}/"
    if shard.provider == "bedrock":
        assert options.bedrock_role_arn and options.bedrock_output_s3_uri
        return {
            "role_arn": options.bedrock_role_arn,
            "output_s3_uri": f"{options.bedrock_output_s3_uri.rstrip('/')}/{folder}",
            "metadata": {SHARD_KEY: shard.shard_id, INPUT_KEY: name, "job_name": job},
        }
    if shard.provider == "vertex":
        assert options.vertex_output_folder
        url = f"{options.vertex_output_folder.rstrip('/')}/{folder}"
        return {"output_folder": {"url": url}, "display_name": job}
    if submit_mode(shard.provider, options) == "blob":
        assert options.azure_blob_folder
        return {"output_folder": {"url": f"{options.azure_blob_folder.rstrip('/')}/out"}}
    return {}


def _create(
    client: BifrostClient,
    name: str,
    shard: Shard,
    input_file_id: str | None,
    window: str,
    extra: dict[str, Any],
    input_blob: str | None = None,
) -> BatchCreateResponse:
    """One create, asked again only after a 429 (a refusal: nothing was created)."""
    inline = input_file_id is None and input_blob is None
    with local_copy(shard.path) if inline else nullcontext(None) as requests_jsonl:
        source = (
            {"requests_jsonl": requests_jsonl}
            if inline
            else {"input_file_id": input_file_id, "input_blob": input_blob}
        )
        deadline = time.monotonic() + MAX_RATE_LIMIT_WAIT_SECONDS
        while True:
            try:
                return client.create_batch(
                    model=f"{shard.provider}/{shard.model}",
                    endpoint=shard.endpoint,
                    completion_window=window,
                    metadata={SHARD_KEY: shard.shard_id, INPUT_KEY: name},
                    extra=extra,
                    **source,
                )
            except RateLimitError as exc:
                wait = exc.retry_after if exc.retry_after is not None else 2.0
                if time.monotonic() + wait > deadline:
                    raise
                log.warning(
                    "%s: create of shard %s rate-limited; retrying in %.1fs",
                    name,
                    shard.shard_id,
                    wait,
                )
                time.sleep(wait)


def _after_unknown_outcome(
    client: BifrostClient, store: ManifestStore, name: str, shard: Shard, exc: GatewayError
) -> SubmitOutcome:
    """After an unknown outcome: adopt the batch if the gateway shows it, else stop clearly."""
    record = store.load(name).shards[shard.shard_id]  # type: ignore[union-attr]
    try:
        found = _reconcile(client, name, record)
    except GatewayError:
        found = None
    if found is not None:
        log.info("%s: the lost create of shard %s made %s; adopted", name, shard.shard_id, found.id)
        _record_batch(client, store, name, shard.shard_id, found)
        return SubmitOutcome(shard.shard_id, found.id, reused=True)
    how = (
        "re-run later: the batch is looked up by its metadata before anything is created again"
        if provider_traits(shard.provider).keeps_metadata
        else f"check the {shard.provider} batches created since the intent time; then re-run with "
        f"adopt={{{shard.shard_id!r}: BATCH_ID}} or assume_not_created=[{shard.shard_id!r}]"
    )
    raise SubmissionUncertain(
        f"{name}: the create of shard {shard.shard_id} may or may not have made a batch "
        f"({type(exc).__name__}: {exc}); nothing was sent again. To resolve it, {how}"
    ) from None


def _reconcile(client: BifrostClient, name: str, record: ShardRecord) -> BatchView | None:
    """Find the batch an interrupted create made, by the shard id in its metadata.

    Raises SubmissionUncertain where the provider keeps no metadata: there is nothing to prove
    the absence of a batch with.
    """
    if not provider_traits(record.provider).keeps_metadata:
        raise SubmissionUncertain(
            f"{name}: a create of shard {record.shard_id} was sent at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(record.intent_at or 0))} and "
            f"its outcome is unknown; {record.provider} keeps no batch metadata to check it by. "
            f"Look at the {record.provider} batches created since then and re-run with "
            f"adopt={{{record.shard_id!r}: BATCH_ID}} or assume_not_created=[{record.shard_id!r}]"
        )
    for batch in client.list_batches(provider=record.provider):
        meta = batch.metadata or {}
        if meta.get(SHARD_KEY) == record.shard_id and meta.get(INPUT_KEY) == name:
            return BatchView.of(batch, record.provider)
    return None


def cancel_and_record(
    client: BifrostClient, store: ManifestStore, name: str, record: ShardRecord
) -> bool:
    """Cancel one shard's batch and record its state as the gateway then reports it (a cancel
    answer lacks the output files and deadlines). False when it had finished already."""
    try:
        client.cancel_batch(record.batch_id, provider=record.provider)  # type: ignore[arg-type]
    except GatewayStatusError as exc:
        if exc.status_code not in (400, 409):
            raise
        return False  # it finished meanwhile: the next poll records how
    batch = client.retrieve_batch(record.batch_id, provider=record.provider)  # type: ignore[arg-type]
    store.record(name, record.shard_id, **status_fields(BatchView.of(batch, record.provider)))
    return True
