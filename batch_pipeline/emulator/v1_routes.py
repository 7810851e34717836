"""The unified `/v1` routes: batches, files and the five inference endpoints, with Bifrost's
provider selection rules and validation messages (BIFROST-NOTES sections 1 and 3)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from batch_pipeline.emulator import fake_model
from batch_pipeline.emulator.batches import ProviderBatches, drop_none
from batch_pipeline.emulator.errors import ApiError, bad_request
from batch_pipeline.emulator.responses import envelope
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.service import DEFAULT_BATCH_LIMIT, DEFAULT_FILE_LIMIT, BatchService
from batch_pipeline.providers import split_model

INFERENCE_ROUTES: dict[str, tuple[str, str]] = {
    # request type -> (endpoint, provider used when the model has no prefix)
    "chat_completion": ("/v1/chat/completions", "openai"),
    "text_completion": ("/v1/completions", "openai"),
    "embedding": ("/v1/embeddings", "openai"),
    "responses": ("/v1/responses", "openai"),
    "messages": ("/v1/messages", "anthropic"),
}


@dataclass
class Call:
    """One request being answered: decoded path parameters, start time, resolved provider."""

    request: Request
    params: list[str]
    started: float
    request_type: str
    provider: str | None = None


def query_limit(request: Request, default: int) -> int:
    """`limit` when it is a positive int; anything else is ignored, as Bifrost does."""
    raw = request.query_params.get("limit", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


class V1Routes:
    """Handlers of the unified API; each returns a Response or raises ApiError."""

    def __init__(self, rt: Runtime, service: BatchService) -> None:
        self.rt = rt
        self.service = service

    def _query_provider(self, call: Call) -> ProviderBatches:
        behaviour = self.service.provider(
            call.request.query_params.get("provider"),
            call.request_type,
            "provider query parameter is required",
        )
        call.provider = behaviour.name
        return behaviour

    async def _json_body(self, request: Request) -> Any:
        return await read_json(request, self.rt.config.max_body_bytes)

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
        call.provider = name
        behaviour = self.service.provider(
            name,
            call.request_type,
            "provider query parameter or x-model-provider header is required when model is not "
            "specified",
        )
        view = await self.service.create(behaviour, body)
        return envelope(view, call.request_type, behaviour.name, call.started)

    async def batch_list(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        limit = query_limit(call.request, DEFAULT_BATCH_LIMIT)
        after = call.request.query_params.get("after")
        body = self.service.list(behaviour, limit, after, call.started)
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def batch_retrieve(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        view = self.service.retrieve(behaviour, call.params[0])
        return envelope(view, call.request_type, behaviour.name, call.started)

    async def batch_cancel(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        view = await self.service.cancel(behaviour, call.params[0])
        return envelope(view, call.request_type, behaviour.name, call.started)

    async def batch_results(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        body = await self.service.results(behaviour, call.params[0])
        return envelope(body, call.request_type, behaviour.name, call.started)

    # files
    async def file_upload(self, call: Call) -> Response:
        request = call.request
        async with multipart_form(request, self.rt.config.max_body_bytes) as form:
            name = (
                request.query_params.get("provider")
                or request.headers.get("x-model-provider")
                or form.get("provider")
            )
            call.provider = name if isinstance(name, str) else None
            behaviour = self.service.provider(
                call.provider,
                call.request_type,
                "provider query parameter or x-model-provider header is required",
            )
            purpose = form.get("purpose")
            if not purpose:
                raise bad_request("purpose is required")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad_request("file is required")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            # Bifrost names the file after the multipart part; the form field only fills in.
            filename = upload.filename or fields.get("filename") or "upload.jsonl"
            view = await self.service.upload(
                behaviour,
                upload.file,
                filename=filename,
                purpose=str(purpose),
                fields=fields,
                content_type=fields.get("content_type") or upload.content_type,
            )
        return envelope(view, call.request_type, behaviour.name, call.started)

    async def file_list(self, call: Call) -> Response:
        query = call.request.query_params
        name = (
            query.get("provider")
            or query.get("x-model-provider")
            or call.request.headers.get("x-model-provider")
        )
        call.provider = name
        behaviour = self.service.provider(
            name,
            call.request_type,
            "provider query parameter or x-model-provider header is required",
        )
        body = self.service.file_list(
            behaviour, query, query_limit(call.request, DEFAULT_FILE_LIMIT)
        )
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def file_retrieve(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        body = self.service.file_retrieve(behaviour, call.params[0])
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def file_delete(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        body = await self.service.file_delete(behaviour, call.params[0])
        return envelope(body, call.request_type, behaviour.name, call.started)

    async def file_content(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        return self.service.file_content(behaviour, call.params[0], call.request_type)

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


async def read_json(request: Request, max_bytes: int) -> Any:
    """A JSON body; too large is 413, unparsable Bifrost's 400 `Invalid request payload`."""
    raw = await request.body()
    if len(raw) > max_bytes:
        raise ApiError(413, "request body too large", type="request_too_large")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("Invalid request payload") from None


@asynccontextmanager
async def multipart_form(request: Request, max_bytes: int) -> AsyncIterator[FormData]:
    """The parsed multipart form of an upload (spooled to disk), closed afterwards."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > max_bytes:
        raise ApiError(413, "request body too large", type="request_too_large")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("Failed to parse multipart form: request is not multipart/form-data")
    try:
        form = await request.form(max_files=1, max_fields=100)
    except HTTPException as exc:
        raise bad_request(f"Failed to parse multipart form: {exc.detail}") from None
    try:
        yield form
    finally:
        await form.close()
