"""Bifrost's `/openai` integration (files and batches for the OpenAI SDK): the provider comes
from the body's `provider` (create, cancel), the query (GET) or the multipart form (upload),
default `openai` (`azure` for the AzureOpenAI SDK); Gemini and Bedrock ids are rewritten to be
path-safe (`batches/` -> `batches-`, Bedrock ids standard base64). No `/results` route."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import Response

from batch_pipeline.emulator.batches import ProviderBatches
from batch_pipeline.emulator.errors import ApiError, bad_request
from batch_pipeline.emulator.integration import IntegrationRoutes, Route
from batch_pipeline.emulator.responses import envelope, error_response
from batch_pipeline.emulator.service import DEFAULT_FILE_LIMIT
from batch_pipeline.emulator.v1_routes import Call, multipart_form, read_json

PREFIXES = (("openai", "v1"), ("openai",), ("openai", "openai"))
REWRITTEN = ("id", "input_file_id")
STORAGE_FIELDS = {
    "storage_config[s3][bucket]": "s3_bucket",
    "storage_config[s3][prefix]": "s3_prefix",
    "storage_config[gcs][bucket]": "gcs_bucket",
    "storage_config[gcs][prefix]": "gcs_prefix",
}


def id_out(provider: str, ident: str) -> str:
    """An id as this route hands it out."""
    if provider == "gemini":
        return ident.replace("batches/", "batches-", 1).replace("files/", "files-", 1)
    if provider == "bedrock":
        return base64.b64encode(ident.encode()).decode()
    return ident


def id_in(provider: str, ident: str) -> str:
    """An id as a client sent it on this route, back to the provider's form."""
    if provider == "gemini":
        for kind in ("batches", "files"):
            if ident.startswith(f"{kind}-"):
                return f"{kind}/{ident[len(kind) + 1 :]}"
        return ident
    if provider == "bedrock":
        try:
            return base64.b64decode(ident, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ident
    return ident


def rewrite(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    """`id` and `input_file_id` of a body (and of its list items) rewritten; never
    `output_file_id`."""
    out = {**body}
    for key in REWRITTEN:
        if isinstance(out.get(key), str):
            out[key] = id_out(provider, out[key])
    if isinstance(out.get("data"), list):
        out["data"] = [rewrite(provider, item) for item in out["data"]]
    return out


class OpenAIRoutes(IntegrationRoutes):
    """The routes the OpenAI SDK calls with `base_url=<bifrost>/openai`."""

    def routes(self) -> list[Route]:
        table: list[Route] = []
        for prefix in PREFIXES:
            table += [
                ("POST", (*prefix, "batches"), "batch_create", self.batch_create),
                ("GET", (*prefix, "batches"), "batch_list", self.batch_list),
                ("GET", (*prefix, "batches", "*"), "batch_retrieve", self.batch_retrieve),
                ("POST", (*prefix, "batches", "*", "cancel"), "batch_cancel", self.batch_cancel),
                ("POST", (*prefix, "files"), "file_upload", self.file_upload),
                ("GET", (*prefix, "files"), "file_list", self.file_list),
                ("GET", (*prefix, "files", "*"), "file_retrieve", self.file_retrieve),
                ("DELETE", (*prefix, "files", "*"), "file_delete", self.file_delete),
                ("GET", (*prefix, "files", "*", "content"), "file_content", self.file_content),
            ]
        return table

    def render_error(
        self, exc: ApiError, request_type: str | None, provider: str | None
    ) -> Response:
        """The OpenAI integration returns the BifrostError as it is."""
        return error_response(exc, request_type, provider)

    def _provider(self, call: Call, name: Any) -> ProviderBatches:
        if not isinstance(name, str) or not name:
            agent = call.request.headers.get("user-agent", "")
            name = "azure" if "AzureOpenAI" in agent else "openai"
        call.provider = name
        return self.service.provider(name, call.request_type, "provider is required")

    def _query_provider(self, call: Call) -> ProviderBatches:
        return self._provider(call, call.request.query_params.get("provider"))

    def _answer(self, call: Call, behaviour: ProviderBatches, body: dict[str, Any]) -> Response:
        return envelope(
            rewrite(behaviour.name, body), call.request_type, behaviour.name, call.started
        )

    async def batch_create(self, call: Call) -> Response:
        body = await read_json(call.request, self.rt.config.max_body_bytes)
        if not isinstance(body, dict):
            raise bad_request("Invalid request payload")
        behaviour = self._provider(call, body.pop("provider", None))
        model = body.get("model")
        if isinstance(model, str) and model and "/" not in model.split(":", 1)[0]:
            body["model"] = f"{behaviour.name}/{model}"
        if isinstance(body.get("input_file_id"), str):
            body["input_file_id"] = id_in(behaviour.name, body["input_file_id"])
        if isinstance(body.get("job_name"), str):
            body["metadata"] = {**(body.get("metadata") or {}), "job_name": body.pop("job_name")}
        view = await self.service.create(behaviour, body)
        return self._answer(call, behaviour, view)

    async def batch_list(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        raw = call.request.query_params.get("limit", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else 30
        after = call.request.query_params.get("after")
        body = self.service.list(behaviour, limit, after, call.started)
        return self._answer(call, behaviour, body)

    async def batch_retrieve(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        view = self.service.retrieve(behaviour, id_in(behaviour.name, call.params[0]))
        return self._answer(call, behaviour, view)

    async def batch_cancel(self, call: Call) -> Response:
        raw = await call.request.body()
        body = await read_json(call.request, self.rt.config.max_body_bytes) if raw.strip() else {}
        name = body.get("provider") if isinstance(body, dict) else None
        behaviour = self._provider(call, name or call.request.query_params.get("provider"))
        view = await self.service.cancel(behaviour, id_in(behaviour.name, call.params[0]))
        return self._answer(call, behaviour, view)

    async def file_upload(self, call: Call) -> Response:
        async with multipart_form(call.request, self.rt.config.max_body_bytes) as form:
            behaviour = self._provider(call, form.get("provider"))
            purpose = form.get("purpose")
            if not purpose:
                raise bad_request("purpose field is required")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad_request("file field is required")
            fields = {STORAGE_FIELDS.get(k, k): v for k, v in form.items() if isinstance(v, str)}
            view = await self.service.upload(
                behaviour,
                upload.file,
                filename=upload.filename or "file.jsonl",
                purpose=str(purpose),
                fields=fields,
                content_type=upload.content_type,
            )
        return self._answer(call, behaviour, view)

    async def file_list(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        query = {STORAGE_FIELDS.get(k, k): v for k, v in call.request.query_params.items()}
        raw = query.get("limit", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_FILE_LIMIT
        body = self.service.file_list(behaviour, query, limit)
        return self._answer(call, behaviour, body)

    async def file_retrieve(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        body = self.service.file_retrieve(behaviour, id_in(behaviour.name, call.params[0]))
        return self._answer(call, behaviour, body)

    async def file_delete(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        body = await self.service.file_delete(behaviour, id_in(behaviour.name, call.params[0]))
        return self._answer(call, behaviour, body)

    async def file_content(self, call: Call) -> Response:
        behaviour = self._query_provider(call)
        file_id = id_in(behaviour.name, call.params[0])
        return self.service.file_content(behaviour, file_id, call.request_type)
