"""Bifrost's `/genai` integration (Gemini batches and files for the google-genai SDK): the
provider comes from `x-model-provider` (default `gemini`); bodies are Gemini's
(`BatchPredictionJob` operations, `BATCH_STATE_*`, string counts); uploads are resumable.
No download route: a batch's inlined responses come back in `batches.get`."""

from __future__ import annotations

import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson
from starlette.responses import Response

from batch_pipeline.emulator.batches import ProviderBatches
from batch_pipeline.emulator.errors import GOOGLE_STATUS, ApiError
from batch_pipeline.emulator.gemini_batches import GeminiBatches, native_state
from batch_pipeline.emulator.integration import IntegrationRoutes, Route, rfc3339
from batch_pipeline.emulator.responses import json_response
from batch_pipeline.emulator.v1_routes import Call, read_json

V1BETA = ("genai", "v1beta")
UPLOAD = ("genai", "upload", "v1beta", "files")
JOB_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.BatchPredictionJob"


class GenAIRoutes(IntegrationRoutes):
    """The routes the google-genai SDK calls with `base_url=<bifrost>/genai`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._uploads: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def routes(self) -> list[Route]:
        return [
            ("POST", (*V1BETA, "models", "**"), "batch_create", self.batch_create),
            ("GET", (*V1BETA, "batches"), "batch_list", self.batch_list),
            ("GET", (*V1BETA, "batches", "*"), "batch_retrieve", self.batch_retrieve),
            ("POST", (*V1BETA, "batches", "*"), "batch_cancel", self.batch_cancel),
            ("DELETE", (*V1BETA, "batches", "*"), "batch_delete", self.batch_delete),
            ("POST", UPLOAD, "file_upload", self.file_upload),
            ("GET", (*V1BETA, "files"), "file_list", self.file_list),
            ("GET", (*V1BETA, "files", "*"), "file_retrieve", self.file_retrieve),
            ("DELETE", (*V1BETA, "files", "*"), "file_delete", self.file_delete),
        ]

    def render_error(
        self, exc: ApiError, request_type: str | None, provider: str | None
    ) -> Response:
        """ToGeminiError: `{error: {code, message, status}}`."""
        status = exc.http_status
        kind = GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
        body = {"error": {"code": status, "message": exc.message, "status": kind}}
        return json_response(body, status, exc.headers)

    def _provider(self, call: Call) -> ProviderBatches:
        return self.header_provider(call, call.request_type, "gemini")

    def _job(self, behaviour: ProviderBatches, batch_id: str) -> dict[str, Any]:
        """ToGeminiBatchJobResponse of a stored batch, with its inlined responses when done."""
        batch = self.service.batch(behaviour, batch_id)
        view = behaviour.view(batch)
        counts = view.get("request_counts") or {}
        state = native_state(batch)
        metadata: dict[str, Any] = {
            "@type": JOB_TYPE,
            "name": batch.id,
            "model": f"models/{batch.model}",
            "displayName": batch.native.get("display_name", ""),
            "state": state,
            "createTime": rfc3339(batch.created_ts),
            "updateTime": rfc3339(max([batch.created_ts, *batch.times.values()])),
            "batchStats": {
                "requestCount": str(counts.get("total", 0)),
                "pendingRequestCount": str(counts.get("pending", 0)),
                "successfulRequestCount": str(counts.get("succeeded", 0)),
            },
        }
        if batch.input_file_id:
            metadata["inputConfig"] = {"fileName": batch.input_file_id}
        done = view.get("done", False)
        if done:
            metadata["endTime"] = rfc3339(max(batch.times.values(), default=batch.created_ts))
            output = self._output(behaviour, batch)
            if output:
                metadata["output"] = output
        return {"name": batch.id, "metadata": metadata, "done": done}

    def _output(self, behaviour: ProviderBatches, batch: Any) -> dict[str, Any] | None:
        if batch.output_file_id:
            return {"responsesFile": batch.output_file_id}
        if not isinstance(behaviour, GeminiBatches):
            return None
        path = behaviour.output_path(self.rt, batch)
        if path is None:
            return None
        responses = []
        with path.open("rb") as source:
            for line in source:
                try:
                    native = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                item = {k: native[k] for k in ("response", "error") if k in native}
                if native.get("key"):
                    item["metadata"] = {"key": native["key"]}
                responses.append(item)
        return {"inlinedResponses": {"inlinedResponses": responses}}

    async def batch_create(self, call: Call) -> Response:
        model, _, method = call.params[0].partition(":")
        if method != "batchGenerateContent":
            raise ApiError(404, f"unknown method {method}")
        behaviour = self._provider(call)
        body = await read_json(call.request, self.rt.config.max_body_bytes)
        batch = body.get("batch") if isinstance(body, dict) else None
        config = (batch or {}).get("inputConfig") or {}
        create: dict[str, Any] = {"model": f"{behaviour.name}/{model.removeprefix('gemini/')}"}
        if config.get("fileName"):
            create["input_file_id"] = config["fileName"]
        else:
            requests = ((config.get("requests") or {}).get("requests")) or []
            create["requests"] = [
                {
                    "custom_id": (item.get("metadata") or {}).get("key", ""),
                    "body": item.get("request") or {},
                }
                for item in requests
                if isinstance(item, dict)
            ]
        view = await self.service.create(behaviour, create)
        return json_response(self._job(behaviour, view["id"]))

    async def batch_list(self, call: Call) -> Response:
        """`pageToken` lands where the Gemini provider never reads it: always the first page."""
        behaviour = self._provider(call)
        raw = call.request.query_params.get("pageSize", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else 20
        page = self.service.list(behaviour, limit, None, call.started)
        operations = [self._job(behaviour, item["id"]) for item in page["data"]]
        return json_response({"operations": operations})

    async def batch_retrieve(self, call: Call) -> Response:
        behaviour = self._provider(call)
        return json_response(self._job(behaviour, call.params[0]))

    async def batch_cancel(self, call: Call) -> Response:
        batch_id, _, method = call.params[0].partition(":")
        if method != "cancel":
            raise ApiError(404, f"unknown method {method}")
        behaviour = self._provider(call)
        await self.service.cancel(behaviour, batch_id)
        return json_response({})

    async def batch_delete(self, call: Call) -> Response:
        """Gemini's batches.delete: the job is forgotten."""
        behaviour = self._provider(call)
        batch = self.service.batch(behaviour, call.params[0])
        with self.rt.store.lock:
            if batch.status not in ("completed", "failed", "cancelled", "expired"):
                raise ApiError(400, "Only finished batches can be deleted.")
            self.rt.store.forget_batch(batch.id)
        return json_response({})

    async def file_upload(self, call: Call) -> Response:
        """Step 1 opens a session (`X-Goog-Upload-URL`); the next POSTs send the bytes."""
        upload_id = call.request.query_params.get("upload_id")
        if upload_id is None:
            return await self._start_upload(call)
        with self._lock:
            session = self._uploads.get(upload_id)
        if session is None:
            raise ApiError(404, "upload session not found or expired")
        path: Path = session["path"]
        with path.open("ab") as target:
            async for chunk in call.request.stream():
                target.write(chunk)
        if "finalize" not in call.request.headers.get("x-goog-upload-command", ""):
            return json_response({}, headers={"X-Goog-Upload-Status": "active"})
        with self._lock:
            self._uploads.pop(upload_id, None)
        behaviour = self._provider(call)
        try:
            with path.open("rb") as source:
                view = await self.service.upload(
                    behaviour,
                    source,
                    filename=session["display_name"],
                    purpose="batch",
                    fields={},
                    content_type=session["mime_type"],
                )
        finally:
            path.unlink(missing_ok=True)
        return json_response({"file": self._file(view)}, headers={"X-Goog-Upload-Status": "final"})

    async def _start_upload(self, call: Call) -> Response:
        body = await read_json(call.request, self.rt.config.max_body_bytes)
        meta = (body or {}).get("file") if isinstance(body, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        upload_id = secrets.token_urlsafe(16)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives across requests
            dir=self.rt.store.root, prefix=".upload-", delete=False
        )
        handle.close()
        with self._lock:
            self._uploads[upload_id] = {
                "display_name": meta.get("displayName") or meta.get("display_name") or "file.bin",
                "mime_type": call.request.headers.get("x-goog-upload-header-content-type")
                or meta.get("mimeType"),
                "path": Path(handle.name),
            }
        url = call.request.url
        location = f"{url.scheme}://{url.netloc}/genai/upload/v1beta/files?upload_id={upload_id}"
        return json_response(
            {}, headers={"X-Goog-Upload-URL": location, "X-Goog-Upload-Status": "active"}
        )

    def _file(self, view: dict[str, Any]) -> dict[str, Any]:
        name = str(view["id"])
        created = rfc3339(view.get("created_at"))
        body = {
            "name": name,
            "displayName": view.get("filename"),
            "mimeType": "application/octet-stream",
            "sizeBytes": str(view.get("bytes", 0)),
            "createTime": created,
            "updateTime": created,
            "expirationTime": rfc3339(view.get("expires_at")),
            "state": "ACTIVE",
            "uri": f"https://generativelanguage.googleapis.com/v1beta/{name}",
        }
        return {k: v for k, v in body.items() if v is not None}

    async def file_list(self, call: Call) -> Response:
        behaviour = self._provider(call)
        raw = call.request.query_params.get("pageSize", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else 10
        page = self.service.file_list(behaviour, {}, limit)
        return json_response({"files": [self._file(item) for item in page["data"]]})

    async def file_retrieve(self, call: Call) -> Response:
        behaviour = self._provider(call)
        return json_response(self._file(self.service.file_retrieve(behaviour, call.params[0])))

    async def file_delete(self, call: Call) -> Response:
        behaviour = self._provider(call)
        await self.service.file_delete(behaviour, call.params[0])
        return json_response({})
