"""The unified `/v1` routes: batches, files and the five inference endpoints, with Bifrost's
provider selection rules and validation messages (BIFROST-NOTES sections 1 and 3)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from anyio import to_thread
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from batch_pipeline.emulator import fake_model
from batch_pipeline.emulator.batches import ProviderBatches, drop_none, encode_cursor, page_after
from batch_pipeline.emulator.counters import fingerprint_requests
from batch_pipeline.emulator.errors import ApiError, bad_request, openai_not_found
from batch_pipeline.emulator.responses import FileDownload, envelope
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import FileRecord, new_id
from batch_pipeline.providers import split_model

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
INFERENCE_ROUTES: dict[str, tuple[str, str]] = {
    # request type -> (endpoint, provider used when the model has no prefix)
    "chat_completion": ("/v1/chat/completions", "openai"),
    "text_completion": ("/v1/completions", "openai"),
    "embedding": ("/v1/embeddings", "openai"),
    "responses": ("/v1/responses", "openai"),
    "messages": ("/v1/messages", "anthropic"),
}
DEFAULT_BATCH_LIMIT = 20
DEFAULT_FILE_LIMIT = 10_000


@dataclass
class Call:
    """One request being answered: decoded path parameters, start time, resolved provider."""

    request: Request
    params: list[str]
    started: float
    request_type: str
    provider: str | None = None


def _limit(request: Request, default: int) -> int:
    """`limit` when it is a positive int; anything else is ignored, as Bifrost does."""
    raw = request.query_params.get("limit", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


class V1Routes:
    """Handlers of the unified API; each returns a Response or raises ApiError."""

    def __init__(self, rt: Runtime, providers: Mapping[str, ProviderBatches]) -> None:
        self.rt = rt
        self.providers = providers

    def _provider(self, call: Call, name: str | None, missing: str) -> ProviderBatches:
        if not name:
            raise bad_request(missing)
        behaviour = self.providers.get(name)
        if behaviour is None:
            raise ApiError(
                400,
                f"{call.request_type} is not supported by {name} provider",
                code="unsupported_operation",
            )
        call.provider = name
        return behaviour

    def _query_provider(self, call: Call) -> ProviderBatches:
        return self._provider(
            call, call.request.query_params.get("provider"), "provider query parameter is required"
        )

    def _batch_id(self, call: Call) -> str:
        batch_id = call.params[0].strip()
        if not batch_id:
            raise bad_request("batch_id is required")
        return batch_id

    def _file_id(self, call: Call) -> str:
        file_id = call.params[0].strip()
        if not file_id:
            raise bad_request("file_id is required")
        return file_id

    async def _json_body(self, request: Request) -> Any:
        raw = await request.body()
        if len(raw) > self.rt.config.max_body_bytes:
            raise ApiError(413, "request body too large", type="request_too_large")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("Invalid request payload") from None

    # batches
    async def batch_create(self, call: Call) -> Response:
        body = await self._json_body(call.request)
        if not isinstance(body, dict):
            raise bad_request("Invalid request payload")
        model = body.get("model")
        parts = split_model(model) if isinstance(model, str) else None
        name = (
            parts[0]
            if parts
            else call.request.query_params.get("provider")
            or call.request.headers.get("x-model-provider")
        )
        behaviour = self._provider(
            call,
            name,
            "provider query parameter or x-model-provider header is required when model is not "
            "specified",
        )
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
        return envelope(
            behaviour.create_view(batch), call.request_type, behaviour.name, call.started
        )

    async def batch_list(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        batches = self.rt.store.provider_batches(behaviour.name)
        ids = [b.id for b in batches]
        limit = _limit(call.request, DEFAULT_BATCH_LIMIT)
        start, stop, has_more = page_after(ids, call.request.query_params.get("after"), limit)
        body: dict[str, Any] = {
            "object": "list",
            "data": [behaviour.view(b) for b in batches[start:stop]],
        }
        if has_more:
            body["has_more"] = True
            body["next_cursor"] = encode_cursor(ids[stop - 1])
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def batch_retrieve(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        batch_id = self._batch_id(call)
        batch = self.rt.store.batch(batch_id, behaviour.name)
        if batch is None:
            raise behaviour.not_found(batch_id)
        if time.time() < batch.hidden_until:
            self.rt.counters.fault_fired("retrieve_404")
            raise behaviour.not_found(batch_id)
        with self.rt.store.lock:
            view = behaviour.view(batch)
        return envelope(view, call.request_type, behaviour.name, call.started)

    async def batch_cancel(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        batch_id = self._batch_id(call)
        batch = self.rt.store.batch(batch_id, behaviour.name)
        if batch is None:
            raise behaviour.not_found(batch_id)
        view = await to_thread.run_sync(partial(behaviour.cancel, self.rt, batch))
        return envelope(view, call.request_type, behaviour.name, call.started)

    async def batch_results(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        batch_id = self._batch_id(call)
        batch = self.rt.store.batch(batch_id, behaviour.name)
        if batch is None:
            raise behaviour.not_found(batch_id)
        body = await to_thread.run_sync(partial(behaviour.results, self.rt, batch))
        parse_errors = body.pop("parse_errors")
        if parse_errors:
            body["extra_fields"] = {"parse_errors": parse_errors}
        return envelope(body, call.request_type, behaviour.name, call.started)

    # files
    def _file_view(self, record: FileRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "object": "file",
            "bytes": record.bytes,
            "created_at": record.created_at,
            "filename": record.filename,
            "purpose": record.purpose,
            "status": "processed",
        }

    async def file_upload(self, call: Call) -> Response:
        request = call.request
        declared = int(request.headers.get("content-length") or 0)
        if declared > self.rt.config.max_body_bytes:
            raise ApiError(413, "request body too large", type="request_too_large")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad_request("Failed to parse multipart form: request is not multipart/form-data")
        try:
            form = await request.form(max_files=1, max_fields=100)
        except HTTPException as exc:
            raise bad_request(f"Failed to parse multipart form: {exc.detail}") from None
        try:
            name = (
                request.query_params.get("provider")
                or request.headers.get("x-model-provider")
                or form.get("provider")
            )
            behaviour = self._provider(
                call,
                name if isinstance(name, str) else None,
                "provider query parameter or x-model-provider header is required",
            )
            purpose = form.get("purpose")
            if not purpose:
                raise bad_request("purpose is required")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad_request("file is required")
            if purpose not in FILE_PURPOSES:
                raise ApiError(
                    400,
                    f"Invalid value for 'purpose': '{purpose}'.",
                    type="invalid_request_error",
                    param="purpose",
                )
            filename = form.get("filename") or upload.filename or "upload.jsonl"
            file_id = new_id("file-")
            target = self.rt.store.file_data(file_id)
            size = await to_thread.run_sync(_copy_upload, upload, target)
        finally:
            await form.close()
        if size == 0:
            target.unlink(missing_ok=True)
            raise bad_request("file content is required for file upload request")
        record = await to_thread.run_sync(
            self.rt.store.register_file, file_id, behaviour.name, str(filename), str(purpose)
        )
        self.rt.counters.file_uploaded(behaviour.name)
        body = {**self._file_view(record), "storage_backend": "api"}
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def file_list(self, call: Call) -> Response:
        query = call.request.query_params
        behaviour = self._provider(
            call,
            query.get("provider")
            or query.get("x-model-provider")
            or call.request.headers.get("x-model-provider"),
            "provider query parameter or x-model-provider header is required",
        )
        files = self.rt.store.provider_files(behaviour.name)
        purpose = query.get("purpose")
        if purpose:
            files = [f for f in files if f.purpose == purpose]
        if query.get("order") == "asc":
            files.reverse()
        ids = [f.id for f in files]
        start, stop, has_more = page_after(
            ids, query.get("after"), _limit(call.request, DEFAULT_FILE_LIMIT)
        )
        body: dict[str, Any] = {
            "object": "list",
            "data": [self._file_view(f) for f in files[start:stop]],
        }
        if has_more:
            body["has_more"] = True
            body["after"] = encode_cursor(ids[stop - 1])
        return envelope(body, call.request_type, behaviour.name, call.started)

    def _live_file(self, call: Call) -> tuple[ProviderBatches, FileRecord]:
        behaviour = self._query_provider(call)
        file_id = self._file_id(call)
        record = self.rt.store.live_file(file_id, behaviour.name)
        if record is None:
            raise openai_not_found(f"No such File object: {file_id}")
        return behaviour, record

    async def file_retrieve(self, call: Call) -> Response:
        behaviour, record = self._live_file(call)
        body = {**self._file_view(record), "storage_backend": "api"}
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def file_delete(self, call: Call) -> Response:
        behaviour, record = self._live_file(call)
        await to_thread.run_sync(self.rt.store.delete_file, record)
        body = {"id": record.id, "object": "file", "deleted": True}
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def file_content(self, call: Call) -> Response:
        _, record = self._live_file(call)
        faults, counters = self.rt.faults, self.rt.counters
        cut = faults.take("reset_download", call.request_type)
        if cut is not None:
            counters.fault_fired("reset_download")
        stall = faults.take("stall_download", call.request_type)
        if stall is not None:
            counters.fault_fired("stall_download")
        return FileDownload(
            self.rt.store.file_data(record.id),
            cut.after_bytes if cut is not None else None,
            stall=(stall.after_bytes, stall.delay) if stall is not None else None,
        )

    # inference
    async def inference(self, call: Call) -> Response:
        endpoint, default_provider = INFERENCE_ROUTES[call.request_type]
        body = await self._json_body(call.request)
        if not isinstance(body, dict):
            raise bad_request("Invalid request payload")
        model = body.get("model")
        parts = split_model(model) if isinstance(model, str) else None
        call.provider = parts[0] if parts else default_provider
        if parts:
            body = {**body, "model": parts[1]}
        config = self.rt.config
        try:
            answer = fake_model.respond(
                endpoint,
                body,
                seed_key=uuid.uuid4().hex,
                created=int(time.time()),
                error_rate=config.error_rate,
                bad_answer_rate=config.bad_answer_rate,
                seed=config.seed,
                default_dimensions=config.embedding_dimensions,
            )
        except fake_model.RequestFailure as failure:
            raise ApiError(
                failure.status,
                failure.message,
                type=failure.type,
                code=failure.code,
                param=failure.param,
            ) from None
        answer["extra_fields"] = drop_none({"model_requested": model})
        return envelope(answer, call.request_type, call.provider, call.started)


def _copy_upload(upload: UploadFile, target: Any) -> int:
    """Copy a spooled upload to the state directory in chunks; returns its size in bytes."""
    upload.file.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)
        return out.tell()
