"""Anthropic Message Batches behind Bifrost: inline requests only, `ended` status, /results items."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from batch_pipeline.emulator import fake_model
from batch_pipeline.emulator.batches import (
    GiveUpReason,
    LineOutcome,
    ProviderBatches,
    corrupt_lines,
    drop_none,
    json_line,
    read_result_lines,
    seconds,
    timeline,
)
from batch_pipeline.emulator.errors import ApiError, anthropic_not_found
from batch_pipeline.emulator.files import ProviderFiles
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord, new_id

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
PROCESSING_STATUS = {"in_progress": "in_progress", "cancelling": "canceling", "ended": "ended"}


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, type="invalid_request_error")


class AnthropicFiles(ProviderFiles):
    """Anthropic's Files API: `file_…` ids, purpose always `batch`, uploads not downloadable."""

    def upload_id(self, filename: str, fields: Mapping[str, str]) -> str:
        return new_id("file_011C", 20)

    def upload_purpose(self, purpose: str) -> str:
        return "batch"

    def refuse_content(self, file_id: str) -> None:
        raise ApiError(400, f"File {file_id} is not downloadable.", type="invalid_request_error")

    def not_found(self, file_id: str) -> ApiError:
        return anthropic_not_found(f"File {file_id} not found.")


class AnthropicBatches(ProviderBatches):
    """Anthropic's batches: in_progress -> ended; cancel -> canceling -> ended."""

    name = "anthropic"
    completed_status = "ended"
    cancelled_status = "ended"
    expired_status = "ended"
    uses_finalizing = False
    cancellable_statuses = frozenset({"in_progress"})

    def __init__(self) -> None:
        self.files = AnthropicFiles(self.name)

    def not_found(self, batch_id: str) -> ApiError:
        return anthropic_not_found(f"Message batch {batch_id} not found.")

    def refuse_cancel(self, batch: BatchRecord) -> None:
        """Cancelling an ended batch answers the batch as it is."""

    # routes
    def create(self, rt: Runtime, body: dict[str, Any]) -> BatchRecord:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ApiError(None, "requests array is required for Anthropic batch API", bifrost=True)
        if len(requests) > MAX_REQUESTS:
            raise _invalid(f"requests: List should have at most {MAX_REQUESTS} items")
        batch_id = new_id("msgbatch_01", 22)
        seen: set[str] = set()
        path = rt.store.batch_path(batch_id, "input.jsonl")
        with path.open("wb") as target:
            for index, item in enumerate(requests):
                custom_id = item.get("custom_id") if isinstance(item, dict) else None
                if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                    path.unlink()
                    raise _invalid(
                        f"requests.{index}.custom_id: String should match pattern "
                        f"'^[a-zA-Z0-9_-]{{1,64}}$'"
                    )
                if custom_id in seen:
                    path.unlink()
                    raise _invalid(
                        f"requests: custom_id values must be unique within a batch; "
                        f"'{custom_id}' appears more than once"
                    )
                seen.add(custom_id)
                params = item.get("params")
                if params is None:
                    params = item.get("body")
                target.write(json_line({"custom_id": custom_id, "params": params}))
        now, deadline, expires = timeline(rt, "24h")
        batch = BatchRecord(
            id=batch_id,
            provider=self.name,
            endpoint="/v1/messages",
            model=body.get("model"),
            created_ts=now,
            deadline_ts=deadline,
            expires_ts=expires,
            hidden_until=now + rt.config.retrieve_404_seconds,
            status="in_progress",
            total=len(requests),
        )
        batch.stamp("in_progress_at", now)
        rt.store.save_batch(batch, new=True)
        return batch

    def _counts(self, batch: BatchRecord) -> dict[str, int]:
        counts = {"total": batch.total, "completed": batch.succeeded, "failed": batch.failed}
        extra = {
            "succeeded": batch.succeeded,
            "expired": batch.expired,
            "canceled": batch.canceled,
            "pending": batch.pending if batch.status != "ended" else 0,
        }
        counts.update({key: value for key, value in extra.items() if value})
        return counts

    def create_view(self, batch: BatchRecord) -> dict[str, Any]:
        return {
            "id": batch.id,
            "object": "batch",
            "status": batch.status,
            "request_counts": self._counts(batch),
            "created_at": seconds(batch.created_ts),
            "expires_at": seconds(batch.expires_ts or batch.deadline_ts),
            "processing_status": PROCESSING_STATUS.get(batch.status, batch.status),
        }

    def view(self, batch: BatchRecord) -> dict[str, Any]:
        ended = batch.status == "ended"
        results_url = (
            f"https://api.anthropic.com/v1/messages/batches/{batch.id}/results" if ended else None
        )
        return drop_none(
            {
                **self.create_view(batch),
                "completed_at": seconds(batch.times.get("ended_at")),
                "cancelling_at": seconds(batch.times.get("cancelling_at")),
                "results_url": results_url,
            }
        )

    def cancel_view(self, batch: BatchRecord) -> dict[str, Any]:
        """Bifrost passes Anthropic's raw `message_batch` type through on cancel."""
        return drop_none(
            {
                "id": batch.id,
                "object": "message_batch",
                "status": batch.status,
                "request_counts": {
                    "total": batch.total,
                    "completed": batch.succeeded,
                    "failed": batch.failed,
                },
                "cancelling_at": seconds(batch.times.get("cancelling_at")),
            }
        )

    def results(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """Each native result line -> {custom_id, result:{type, message}}, plus Bifrost's lossy
        `error:{code:"error", message:""}` when the upstream result carries an error."""
        if batch.status != "ended":
            raise ApiError(
                400,
                f"Batch {batch.id} is still processing; results are available once it has ended.",
                type="invalid_request_error",
            )
        items, parse_errors = read_result_lines(
            rt.store.batch_path(batch.id, "results.jsonl"), lambda native, _: _result_item(native)
        )
        return {"batch_id": batch.id, "results": items, "parse_errors": parse_errors}

    # worker hooks
    def input_path(self, rt: Runtime, batch: BatchRecord) -> Path:
        return rt.store.batch_path(batch.id, "input.jsonl")

    def validate(self, rt: Runtime, batch: BatchRecord) -> None:
        """Anthropic validates at create time; batches start in_progress."""

    def answer_line(self, rt: Runtime, batch: BatchRecord, line: bytes) -> LineOutcome:
        request = orjson.loads(line)
        custom_id = request["custom_id"]
        config = rt.config
        try:
            message = fake_model.respond(
                "/v1/messages",
                request["params"],
                seed_key=f"{batch.id}:{custom_id}",
                created=int(time.time()),
                error_rate=config.error_rate,
                bad_answer_rate=config.bad_answer_rate,
                seed=config.seed,
            )
        except fake_model.RequestFailure as failure:
            result = {"type": "errored", "error": failure.anthropic_error()}
            return LineOutcome("failed", out=json_line({"custom_id": custom_id, "result": result}))
        result = {"type": "succeeded", "message": message}
        return LineOutcome("succeeded", out=json_line({"custom_id": custom_id, "result": result}))

    def give_up_line(self, batch: BatchRecord, line: bytes, reason: GiveUpReason) -> LineOutcome:
        custom_id = orjson.loads(line)["custom_id"]
        return LineOutcome(
            reason, out=json_line({"custom_id": custom_id, "result": {"type": reason}})
        )

    def publish(self, rt: Runtime, batch: BatchRecord) -> None:
        """The results become readable through /v1/batches/{id}/results."""
        part = rt.store.batch_path(batch.id, "out.part")
        if not part.exists():
            return
        malformed = rt.faults.take("malformed_output")
        if malformed is not None:
            corrupt_lines(part, malformed.lines)
            rt.counters.fault_fired("malformed_output")
        os.replace(part, rt.store.batch_path(batch.id, "results.jsonl"))


def _result_item(native: dict[str, Any]) -> dict[str, Any]:
    """A native result line as Bifrost's item: {custom_id, result:{type, message}}, plus its
    lossy `error:{code, message}` when the upstream result carries an error."""
    result = native.get("result") or {}
    item: dict[str, Any] = {
        "custom_id": native.get("custom_id"),
        "result": drop_none({"type": result.get("type"), "message": result.get("message")}),
    }
    upstream_error = result.get("error")
    if upstream_error is not None:
        item["error"] = {
            "code": str(upstream_error.get("type", "")),
            "message": str(upstream_error.get("message", "")),
        }
    return item
