"""Gemini's Batch API behind Bifrost: `batches/<id>` jobs from inline requests or a `files/<id>`
input, Gemini's states mapped to Bifrost's, counts as Bifrost derives them from `batchStats`, and
`/results` flattened to `{text, finish_reason, usage}` (research report section 2)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from batch_pipeline.emulator import fake_native
from batch_pipeline.emulator.batches import (
    GiveUpReason,
    LineOutcome,
    ProviderBatches,
    as_dict,
    corrupt_lines,
    drop_none,
    json_line,
    read_result_lines,
    seconds,
    timeline,
)
from batch_pipeline.emulator.errors import ApiError, google_error
from batch_pipeline.emulator.fake_model import RequestFailure
from batch_pipeline.emulator.files import ProviderFiles
from batch_pipeline.emulator.google_requests import (
    DEFAULT_GEMINI_MODEL,
    flatten_response,
    to_gemini_request,
)
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord, FileRecord, derived_id, new_id

STATES = {
    "validating": "BATCH_STATE_PENDING",
    "in_progress": "BATCH_STATE_RUNNING",
    "completed": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "cancelling": "BATCH_STATE_CANCELLING",
    "cancelled": "BATCH_STATE_CANCELLED",
    "expired": "BATCH_STATE_EXPIRED",
}
NOT_FOUND = "Requested entity was not found."
NO_DOWNLOAD = (
    "Gemini Files API doesn't support direct content download. "
    "Use the file URI in your requests instead."
)
FILE_RETENTION_SECONDS = 48 * 3600


def native_state(batch: BatchRecord) -> str:
    """Gemini's `BATCH_STATE_*` for a batch."""
    return STATES.get(batch.status, batch.status)


def bare_model(model: Any) -> str:
    """The model of a create (`gemini/x` or `x`), Bifrost's default when there is none."""
    if not isinstance(model, str) or not model:
        return DEFAULT_GEMINI_MODEL
    return model.partition("/")[2] if model.startswith("gemini/") else model


class GeminiFiles(ProviderFiles):
    """Gemini's Files API: `files/<id>`, purpose `vision` when listed or retrieved, and no
    content download."""

    def upload_id(self, filename: str, fields: Mapping[str, str]) -> str:
        return new_id("files/", 12).lower()

    def stored_id(self, wire_id: str) -> str:
        return wire_id if wire_id.startswith("files/") else f"files/{wire_id}"

    def view(
        self, record: FileRecord, *, listing: bool = False, uploaded: bool = False
    ) -> dict[str, Any]:
        """Only the upload answer echoes the purpose; retrieve and list say `vision`."""
        body = super().view(record, listing=listing, uploaded=uploaded)
        body["expires_at"] = record.created_at + FILE_RETENTION_SECONDS
        if not uploaded:
            body["purpose"] = "vision"
        if not listing:
            body["storage_uri"] = f"https://generativelanguage.googleapis.com/v1beta/{record.id}"
        return body

    def refuse_content(self, file_id: str) -> None:
        raise ApiError(None, NO_DOWNLOAD, bifrost=True)

    def not_found(self, file_id: str) -> ApiError:
        return google_error(404, NOT_FOUND)


class GeminiBatches(ProviderBatches):
    """Gemini batches: PENDING/RUNNING read as in_progress; no finalizing; results once done."""

    name = "gemini"
    uses_finalizing = False

    def __init__(self) -> None:
        self.files = GeminiFiles(self.name)

    def normalize_id(self, rt: Runtime, batch_id: str) -> str:
        return batch_id if batch_id.startswith("batches/") else f"batches/{batch_id}"

    def not_found(self, batch_id: str) -> ApiError:
        return google_error(404, NOT_FOUND)

    def refuse_cancel(self, batch: BatchRecord) -> None:
        raise google_error(400, f"Batch {batch.id} is in state {native_state(batch)}.")

    # routes
    def create(self, rt: Runtime, body: dict[str, Any]) -> BatchRecord:
        """Inline items become `{key, request}` lines (only `body` is read); a file id gets its
        `files/` prefix. `completion_window` and `metadata` never reach Gemini."""
        model = bare_model(body.get("model"))
        batch_id = new_id("batches/", 32).lower()
        file_id = body.get("input_file_id")
        if isinstance(file_id, str) and file_id:
            file_id = self.files.stored_id(file_id)
            if rt.store.live_file(file_id, self.name) is None:
                raise google_error(404, NOT_FOUND)
        else:
            file_id = None
            requests = body.get("requests")
            if not isinstance(requests, list):
                raise google_error(400, 'Invalid JSON payload received. Unknown name "requests".')
            with rt.store.batch_path(batch_id, "input.jsonl").open("wb") as target:
                for item in requests:
                    item = item if isinstance(item, dict) else {}
                    key = item.get("custom_id") or ""
                    target.write(
                        json_line({"key": key, "request": to_gemini_request(item.get("body"))})
                    )
        now, deadline, _ = timeline(rt, "24h")
        batch = BatchRecord(
            id=batch_id,
            provider=self.name,
            endpoint=body.get("endpoint"),
            model=model,
            input_file_id=file_id,
            created_ts=now,
            deadline_ts=deadline,
            hidden_until=now + rt.config.retrieve_404_seconds,
            status="validating",
        )
        rt.store.save_batch(batch, new=True)
        return batch

    def _counts(self, batch: BatchRecord) -> dict[str, int]:
        """Bifrost's reading of batchStats: `completed` counts failures too."""
        pending = batch.total - batch.succeeded - batch.failed
        completed = batch.total - pending
        counts = {
            "total": batch.total,
            "completed": completed,
            "failed": completed - batch.succeeded,
        }
        if batch.succeeded:
            counts["succeeded"] = batch.succeeded
        if pending:
            counts["pending"] = pending
        return counts

    def _status(self, batch: BatchRecord) -> str:
        return "in_progress" if batch.status == "validating" else batch.status

    def create_view(self, batch: BatchRecord) -> dict[str, Any]:
        return drop_none(
            {
                "id": batch.id,
                "object": "batch",
                "endpoint": batch.endpoint,
                "input_file_id": batch.input_file_id,
                "status": self._status(batch),
                "request_counts": {"total": batch.total, "completed": 0, "failed": 0},
                "created_at": seconds(batch.created_ts),
                "operation_name": batch.id,
            }
        )

    def view(self, batch: BatchRecord) -> dict[str, Any]:
        return drop_none(
            {
                **self.create_view(batch),
                "request_counts": self._counts(batch),
                "output_file_id": batch.output_file_id,
                "done": batch.status in ("completed", "failed", "cancelled", "expired"),
            }
        )

    def list_view(self, batch: BatchRecord) -> dict[str, Any]:
        """Gemini list items carry only id, status, created_at and operation_name."""
        return {
            "id": batch.id,
            "object": "batch",
            "status": self._status(batch),
            "created_at": seconds(batch.created_ts),
            "operation_name": batch.id,
        }

    def cancel_view(self, batch: BatchRecord) -> dict[str, Any]:
        """Bifrost answers a synthetic body, whatever Gemini said."""
        return {
            "id": batch.id,
            "object": "batch",
            "status": "cancelling",
            "cancelling_at": int(time.time()),
        }

    def output_path(self, rt: Runtime, batch: BatchRecord) -> Path | None:
        """Gemini's output once the batch is done: the responses file or the inlined responses."""
        if batch.output_file_id:
            return rt.store.file_data(batch.output_file_id)
        inline = rt.store.batch_path(batch.id, "results.jsonl")
        return inline if inline.exists() else None

    def results(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """Refused while PENDING/RUNNING; then flattened items, `request-<i>` when a line has no
        key, and one `"info"` item for a SUCCEEDED/FAILED batch without output."""
        if batch.status in ("validating", "in_progress"):
            raise ApiError(
                None,
                f"batch {batch.id} is still processing (state: {native_state(batch)}), "
                "results not yet available",
                bifrost=True,
            )
        items: list[dict[str, Any]] = []
        parse_errors: list[dict[str, Any]] = []
        path = self.output_path(rt, batch)
        if path is not None and path.exists():
            items, parse_errors = read_result_lines(path, result_item)
        if not items and batch.status in ("completed", "failed"):
            message = f"Batch completed with state: {native_state(batch)}. No results available."
            info = {"status_code": 200, "body": {"message": message}}
            items.append({"custom_id": "info", "response": info})
        return {"batch_id": batch.id, "results": items, "parse_errors": parse_errors}

    # worker hooks
    def input_path(self, rt: Runtime, batch: BatchRecord) -> Path:
        if batch.input_file_id:
            return rt.store.file_data(batch.input_file_id)
        return rt.store.batch_path(batch.id, "input.jsonl")

    def validate(self, rt: Runtime, batch: BatchRecord) -> None:
        """PENDING -> RUNNING with the request count; a file with no request line fails."""
        total = readable = 0
        with self.input_path(rt, batch).open("rb") as source:
            for line in source:
                if not line.strip():
                    continue
                total += 1
                try:
                    readable += isinstance(orjson.loads(line).get("request"), dict)
                except (orjson.JSONDecodeError, AttributeError):
                    continue
        now = time.time()
        with rt.store.lock:
            batch.total = total
            if readable == 0:
                batch.status = "failed"
                batch.stamp("failed_at", now)
            elif batch.status == "validating":
                batch.status = "in_progress"
                batch.stamp("in_progress_at", now)
            rt.store.save_batch(batch)

    def answer_line(self, rt: Runtime, batch: BatchRecord, line: bytes) -> LineOutcome:
        """One `{key, request}` line -> Gemini's `{key, response}` or `{key, error}` line."""
        config = rt.config
        try:
            item = orjson.loads(line)
            if not isinstance(item, dict):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            failure = RequestFailure(400, "Invalid JSON payload received.")
            return LineOutcome("failed", out=json_line({"error": failure.google_error()}))
        key = item.get("key") if isinstance(item.get("key"), str) else None
        head = {"key": key} if key else {}
        try:
            response = fake_native.generate_content(
                item.get("request"),
                model=batch.model or DEFAULT_GEMINI_MODEL,
                seed_key=f"{batch.id}:{key}",
                draws=fake_native.Draws(config.error_rate, config.bad_answer_rate, config.seed),
            )
        except RequestFailure as failure:
            return LineOutcome("failed", out=json_line({**head, "error": failure.google_error()}))
        return LineOutcome("succeeded", out=json_line({**head, "response": response}))

    def give_up_line(self, batch: BatchRecord, line: bytes, reason: GiveUpReason) -> LineOutcome:
        """Requests not answered before a cancel or expiry have no output line."""
        return LineOutcome(reason)

    def publish(self, rt: Runtime, batch: BatchRecord) -> None:
        """A file batch's output becomes a `files/` responses file; an inline batch's output the
        inlined responses."""
        part = rt.store.batch_path(batch.id, "out.part")
        if not part.exists() or part.stat().st_size == 0:
            part.unlink(missing_ok=True)
            return
        malformed = rt.faults.take("malformed_output")
        if malformed is not None:
            corrupt_lines(part, malformed.lines)
            rt.counters.fault_fired("malformed_output")
        if batch.input_file_id is None:
            os.replace(part, rt.store.batch_path(batch.id, "results.jsonl"))
            return
        file_id = derived_id("files/", f"{batch.id}:responses", 12)
        os.replace(part, rt.store.file_data(file_id))
        rt.store.register_file(file_id, self.name, f"{batch.id}-responses.jsonl", "batch_output")
        batch.output_file_id = file_id


def result_item(native: dict[str, Any], index: int) -> dict[str, Any]:
    """One output line as Bifrost returns it: custom_id from `custom_id`, `key` or
    `metadata.key`, else `request-<index>`; a response flattened, an error's code a string."""
    metadata = as_dict(native.get("metadata"))
    custom_id = native.get("custom_id") or native.get("key") or metadata.get("key")
    custom_id = custom_id or f"request-{index}"
    error = native.get("error")
    if isinstance(error, dict):
        return {
            "custom_id": custom_id,
            "error": {"code": str(error.get("code", "")), "message": str(error.get("message", ""))},
        }
    response = as_dict(native.get("response"))
    return {
        "custom_id": custom_id,
        "response": {"status_code": 200, "body": flatten_response(response)},
    }
