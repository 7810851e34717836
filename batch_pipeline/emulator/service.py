"""What Bifrost's core does for a batch or file request once the provider is known: the calls
every route (`/v1` and the SDK integration routes) shares. Each returns a body without
`extra_fields`, or raises ApiError."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, BinaryIO

from anyio import to_thread

from batch_pipeline.emulator.batches import ProviderBatches, encode_cursor, page_after
from batch_pipeline.emulator.counters import fingerprint_requests
from batch_pipeline.emulator.errors import ApiError, bad_request
from batch_pipeline.emulator.responses import FileDownload, latency_ms
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord, FileRecord

FILE_PURPOSES = (
    "batch",
    "assistants",
    "fine-tune",
    "vision",
    "batch_output",
    "user_data",
    "responses",
    "evals",
)
DEFAULT_BATCH_LIMIT = 20
DEFAULT_FILE_LIMIT = 10_000


class BatchService:
    """Batches and files of every provider, as Bifrost's core handles them."""

    def __init__(self, rt: Runtime, providers: Mapping[str, ProviderBatches]) -> None:
        self.rt = rt
        self.providers = providers

    def provider(self, name: str | None, request_type: str, missing: str) -> ProviderBatches:
        """The provider named, or Bifrost's error for none or an unconfigured one."""
        if not name:
            raise bad_request(missing)
        behaviour = self.providers.get(name)
        if behaviour is None:
            words = request_type.replace("_", " ")
            raise ApiError(None, f"provider not found for {words} request")
        return behaviour

    # batches
    async def create(self, behaviour: ProviderBatches, body: dict[str, Any]) -> dict[str, Any]:
        """Core's input checks, then the provider's create; counted for the admin counters."""
        has_file = bool(body.get("input_file_id") or body.get("input_blob"))
        has_requests = bool(body.get("requests"))
        if not has_file and not has_requests:
            raise bad_request("either input_file_id, input_blob, or requests is required")
        if has_file and has_requests:
            raise bad_request(
                "either input_file_id/input_blob or requests must be provided, not both"
            )
        batch = await to_thread.run_sync(partial(behaviour.create, self.rt, body))
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else None
        fingerprint = fingerprint_requests(body["requests"]) if has_requests else None
        self.rt.counters.batch_created(behaviour.name, metadata, fingerprint)
        self.rt.wake.set()
        with self.rt.store.lock:
            return behaviour.create_view(batch)

    def batch(
        self, behaviour: ProviderBatches, batch_id: str, *, retrieve: bool = False
    ) -> BatchRecord:
        """The stored batch a path id names (404 as the provider says it); a retrieve honours
        the `retrieve_404_seconds` quirk."""
        if not batch_id.strip():
            raise bad_request("batch_id is required")
        stored = behaviour.normalize_id(self.rt, batch_id.strip())
        batch = self.rt.store.batch(stored, behaviour.name)
        if batch is None:
            raise behaviour.not_found(batch_id)
        if retrieve and time.time() < batch.hidden_until:
            self.rt.counters.fault_fired("retrieve_404")
            raise behaviour.not_found(batch_id)
        return batch

    def list(
        self, behaviour: ProviderBatches, limit: int, after: str | None, started: float
    ) -> dict[str, Any]:
        """A page of batches, newest first; each item carries its own `extra_fields`, as the
        provider's converted retrieve bodies do."""
        batches = self.rt.store.provider_batches(behaviour.name)
        ids = [b.id for b in batches]
        start, stop, has_more = page_after(ids, after, limit)
        item_extra = {
            "request_type": "batch_retrieve",
            "provider": behaviour.name,
            "latency": latency_ms(started),
            "chunk_index": 0,
        }
        with self.rt.store.lock:
            data = [
                {**behaviour.list_view(b), "extra_fields": dict(item_extra)}
                for b in batches[start:stop]
            ]
        body: dict[str, Any] = {"object": "list", "data": data}
        if has_more:
            body["has_more"] = True
            body["next_cursor"] = encode_cursor(ids[stop - 1])
        return body

    def retrieve(self, behaviour: ProviderBatches, batch_id: str) -> dict[str, Any]:
        batch = self.batch(behaviour, batch_id, retrieve=True)
        with self.rt.store.lock:
            return behaviour.retrieve_view(self.rt, batch)

    async def cancel(self, behaviour: ProviderBatches, batch_id: str) -> dict[str, Any]:
        batch = self.batch(behaviour, batch_id)
        return await to_thread.run_sync(partial(behaviour.cancel, self.rt, batch))

    async def results(self, behaviour: ProviderBatches, batch_id: str) -> dict[str, Any]:
        """The /results body; parse errors go to `extra_fields.parse_errors`."""
        batch = self.batch(behaviour, batch_id)
        body = await to_thread.run_sync(partial(behaviour.results, self.rt, batch))
        parse_errors = body.pop("parse_errors")
        if parse_errors:
            body["extra_fields"] = {"parse_errors": parse_errors}
        return body

    # files
    async def upload(
        self,
        behaviour: ProviderBatches,
        source: BinaryIO,
        *,
        filename: str,
        purpose: str,
        fields: Mapping[str, str],
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Store an upload under the id the provider mints (a bucket key for S3 and GCS)."""
        if purpose not in FILE_PURPOSES:
            raise ApiError(
                400,
                f"Invalid value for 'purpose': '{purpose}'.",
                type="invalid_request_error",
                param="purpose",
            )
        files = behaviour.files
        file_id = files.upload_id(filename, fields)
        target = self.rt.store.file_data(file_id)
        size = await to_thread.run_sync(_copy, source, target)
        if size == 0:
            target.unlink(missing_ok=True)
            raise bad_request("file content is required for file upload request")
        record = await to_thread.run_sync(
            partial(
                self.rt.store.register_file,
                file_id,
                behaviour.name,
                filename,
                files.upload_purpose(purpose),
                content_type,
            )
        )
        self.rt.counters.file_uploaded(behaviour.name)
        return files.view(record, uploaded=True)

    def file_list(
        self, behaviour: ProviderBatches, query: Mapping[str, str], limit: int
    ) -> dict[str, Any]:
        files = behaviour.files.listing(self.rt.store, query)
        purpose = query.get("purpose")
        if purpose:
            files = [f for f in files if f.purpose == purpose]
        if query.get("order") == "asc":
            files.reverse()
        ids = [f.id for f in files]
        start, stop, has_more = page_after(ids, query.get("after"), limit)
        body: dict[str, Any] = {
            "object": "list",
            "data": [behaviour.files.view(f, listing=True) for f in files[start:stop]],
        }
        if has_more:
            body["has_more"] = True
            body["after"] = encode_cursor(ids[stop - 1])
        return body

    def file(self, behaviour: ProviderBatches, file_id: str) -> FileRecord:
        """The live file a path id names, or the provider's 404."""
        if not file_id.strip():
            raise bad_request("file_id is required")
        record = behaviour.files.find(self.rt.store, file_id.strip())
        if record is None:
            raise behaviour.files.not_found(file_id)
        return record

    def file_retrieve(self, behaviour: ProviderBatches, file_id: str) -> dict[str, Any]:
        return behaviour.files.view(self.file(behaviour, file_id))

    async def file_delete(self, behaviour: ProviderBatches, file_id: str) -> dict[str, Any]:
        record = self.file(behaviour, file_id)
        await to_thread.run_sync(self.rt.store.delete_file, record)
        return {"id": behaviour.files.wire_id(record.id), "object": "file", "deleted": True}

    def file_content(
        self, behaviour: ProviderBatches, file_id: str, request_type: str
    ) -> FileDownload:
        """The file's bytes, with the download faults applied; refused where the provider
        serves no download."""
        record = self.file(behaviour, file_id)
        behaviour.files.refuse_content(file_id)
        faults, counters = self.rt.faults, self.rt.counters
        cut = faults.take("reset_download", request_type)
        if cut is not None:
            counters.fault_fired("reset_download")
        stall = faults.take("stall_download", request_type)
        if stall is not None:
            counters.fault_fired("stall_download")
        return FileDownload(
            self.rt.store.file_data(record.id),
            cut.after_bytes if cut is not None else None,
            stall=(stall.after_bytes, stall.delay) if stall is not None else None,
            content_type=record.content_type,
        )


def _copy(source: BinaryIO, target: Any) -> int:
    """Copy an upload to the state directory in 1 MB chunks; returns its size in bytes."""
    source.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
        return out.tell()
