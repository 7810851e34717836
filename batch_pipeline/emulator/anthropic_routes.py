"""Bifrost's `/anthropic` integration (message batches and files for the Anthropic SDK): the
provider comes from `x-model-provider` (default `anthropic`); bodies and errors are
Anthropic-shaped; `/results` answers Bifrost's JSON, not JSONL; a file's `/content` answers its
metadata, as Bifrost wires it to a retrieve."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import Response

from batch_pipeline.emulator.batches import ProviderBatches
from batch_pipeline.emulator.errors import ApiError, bad_request
from batch_pipeline.emulator.integration import IntegrationRoutes, Route, rfc3339
from batch_pipeline.emulator.responses import json_response
from batch_pipeline.emulator.v1_routes import Call, multipart_form, read_json

BATCHES = ("anthropic", "v1", "messages", "batches")
FILES = ("anthropic", "v1", "files")
PROCESSING = {
    "validating": "in_progress",
    "in_progress": "in_progress",
    "cancelling": "canceling",
    "completed": "ended",
    "ended": "ended",
    "cancelled": "ended",
}


def message_batch(view: dict[str, Any]) -> dict[str, Any]:
    """Bifrost's AnthropicBatchResponse of a batch body; `failed` and `expired` leak through
    as processing statuses, as in Bifrost."""
    counts = view.get("request_counts") or {}
    body: dict[str, Any] = {
        "id": view["id"],
        "type": "message_batch",
        "processing_status": PROCESSING.get(view["status"], view["status"]),
        "request_counts": {
            "processing": counts.get("pending", 0),
            "succeeded": counts.get("succeeded", counts.get("completed", 0)),
            "errored": counts.get("failed", 0),
            "canceled": counts.get("canceled", 0),
            "expired": counts.get("expired", 0),
        },
        "created_at": rfc3339(view.get("created_at")),
        "expires_at": rfc3339(view.get("expires_at") or view.get("created_at", 0) + 86400),
        "ended_at": rfc3339(view.get("completed_at")),
        "cancel_initiated_at": rfc3339(view.get("cancelling_at")),
        "archived_at": None,
        "results_url": view.get("results_url"),
    }
    return body


class AnthropicRoutes(IntegrationRoutes):
    """The routes the Anthropic SDK calls with `base_url=<bifrost>/anthropic`."""

    def routes(self) -> list[Route]:
        return [
            ("POST", BATCHES, "batch_create", self.batch_create),
            ("GET", BATCHES, "batch_list", self.batch_list),
            ("GET", (*BATCHES, "*"), "batch_retrieve", self.batch_retrieve),
            ("POST", (*BATCHES, "*", "cancel"), "batch_cancel", self.batch_cancel),
            ("GET", (*BATCHES, "*", "results"), "batch_results", self.batch_results),
            ("POST", FILES, "file_upload", self.file_upload),
            ("GET", FILES, "file_list", self.file_list),
            ("GET", (*FILES, "*", "content"), "file_content", self.file_content),
            ("DELETE", (*FILES, "*"), "file_delete", self.file_delete),
        ]

    def render_error(
        self, exc: ApiError, request_type: str | None, provider: str | None
    ) -> Response:
        """ToAnthropicChatCompletionError: `{type: "error", error: {type, message}}`."""
        kind = exc.type or ("api_error" if exc.http_status >= 500 else "invalid_request_error")
        body = {"type": "error", "error": {"type": kind, "message": exc.message}}
        return json_response(body, exc.http_status, exc.headers)

    def _provider(self, call: Call) -> ProviderBatches:
        return self.header_provider(call, call.request_type, "anthropic")

    async def batch_create(self, call: Call) -> Response:
        behaviour = self._provider(call)
        body = await read_json(call.request, self.rt.config.max_body_bytes)
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list):
            raise bad_request("requests is required")
        items = [
            {"custom_id": item.get("custom_id"), "params": item.get("params")}
            for item in requests
            if isinstance(item, dict)
        ]
        create: dict[str, Any] = {"requests": items}
        if behaviour.name != "anthropic":
            models = {(item.get("params") or {}).get("model") for item in items}
            if None in models or "" in models:
                raise bad_request("model is required")
            if len(models) != 1:
                raise bad_request(
                    "for non-Anthropic providers, model must be the same for all requests"
                )
            create["model"] = f"{behaviour.name}/{models.pop()}"
        view = await self.service.create(behaviour, create)
        return json_response(message_batch(view))

    async def batch_list(self, call: Call) -> Response:
        behaviour = self._provider(call)
        raw = call.request.query_params.get("page_size", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else 20
        page = self.service.list(behaviour, limit, None, call.started)
        data = [message_batch(item) for item in page["data"]]
        return json_response(
            {
                "data": data,
                "has_more": bool(page.get("has_more")),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def batch_retrieve(self, call: Call) -> Response:
        behaviour = self._provider(call)
        return json_response(message_batch(self.service.retrieve(behaviour, call.params[0])))

    async def batch_cancel(self, call: Call) -> Response:
        behaviour = self._provider(call)
        await self.service.cancel(behaviour, call.params[0])
        return json_response(message_batch(self.service.retrieve(behaviour, call.params[0])))

    async def batch_results(self, call: Call) -> Response:
        behaviour = self._provider(call)
        return json_response(await self.service.results(behaviour, call.params[0]))

    def _file(self, behaviour: ProviderBatches, view: dict[str, Any]) -> dict[str, Any]:
        ident = str(view["id"])
        if behaviour.name == "gemini":
            ident = ident.replace("files/", "files-", 1)
        return {
            "id": ident,
            "type": "file",
            "filename": view.get("filename"),
            "mime_type": "application/octet-stream",
            "size_bytes": view.get("bytes"),
            "created_at": rfc3339(view.get("created_at")),
            "downloadable": False,
        }

    def _file_id(self, behaviour: ProviderBatches, ident: str) -> str:
        return ident.replace("files-", "files/", 1) if behaviour.name == "gemini" else ident

    async def file_upload(self, call: Call) -> Response:
        behaviour = self._provider(call)
        async with multipart_form(call.request, self.rt.config.max_body_bytes) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad_request("file is required")
            purpose = form.get("purpose") or "batch"
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            view = await self.service.upload(
                behaviour,
                upload.file,
                filename=upload.filename or "file.jsonl",
                purpose=str(purpose),
                fields=fields,
                content_type=upload.content_type,
            )
        return json_response(self._file(behaviour, view))

    async def file_list(self, call: Call) -> Response:
        behaviour = self._provider(call)
        raw = call.request.query_params.get("limit", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else 20
        page = self.service.file_list(behaviour, {}, limit)
        data = [self._file(behaviour, item) for item in page["data"]]
        return json_response(
            {
                "data": data,
                "has_more": bool(page.get("has_more")),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def file_content(self, call: Call) -> Response:
        """Bifrost wires this route to a retrieve: the metadata JSON, not the bytes."""
        behaviour = self._provider(call)
        view = self.service.file_retrieve(behaviour, self._file_id(behaviour, call.params[0]))
        return json_response(self._file(behaviour, view))

    async def file_delete(self, call: Call) -> Response:
        behaviour = self._provider(call)
        body = await self.service.file_delete(behaviour, self._file_id(behaviour, call.params[0]))
        return json_response(
            {"id": call.params[0], "type": "file_deleted", "deleted": body["deleted"]}
        )
