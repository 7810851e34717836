"""Vertex AI batch prediction jobs behind Bifrost, over the emulator's simulated GCS: resource
name ids, a `gs://` JSONL input or inline requests (custom_id in `labels.bifrost_custom_id`),
`output_folder.url` required, raw `GenerateContentResponse` result bodies (report section 4)."""

from __future__ import annotations

import base64
import binascii
import random
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from batch_pipeline.emulator import fake_native, objects
from batch_pipeline.emulator.batches import (
    GiveUpReason,
    LineOutcome,
    ProviderBatches,
    as_dict,
    corrupt_lines,
    drop_none,
    end_validation,
    json_line,
    seconds,
    timeline,
)
from batch_pipeline.emulator.errors import ApiError, google_error
from batch_pipeline.emulator.fake_model import RequestFailure
from batch_pipeline.emulator.files import ProviderFiles
from batch_pipeline.emulator.google_requests import to_gemini_request
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord, FileRecord, Store

PROJECT = "123456789012"
LOCATION = "us-central1"
NATIVE = {
    "validating": "JOB_STATE_PENDING",
    "in_progress": "JOB_STATE_RUNNING",
    "completed": "JOB_STATE_SUCCEEDED",
    "failed": "JOB_STATE_FAILED",
    "cancelling": "JOB_STATE_CANCELLING",
    "cancelled": "JOB_STATE_CANCELLED",
    "expired": "JOB_STATE_EXPIRED",
}
NO_BUCKET = "gcs_bucket is required for Vertex FileUpload (provide in storage_config.gcs)"


def native_state(batch: BatchRecord) -> str:
    """Vertex's `JOB_STATE_*` (PARTIALLY_SUCCEEDED when some requests failed)."""
    if batch.status == "completed" and batch.failed:
        return "JOB_STATE_PARTIALLY_SUCCEEDED"
    return NATIVE.get(batch.status, batch.status)


def encode_gs(uri: str) -> str:
    """Bifrost's path-safe form of a `gs://` id: base64url without padding."""
    return base64.urlsafe_b64encode(uri.encode()).decode().rstrip("=")


def decode_gs(wire: str) -> str:
    """A `gs://` id from its base64url form (a raw `gs://` id passes through)."""
    if wire.startswith("gs://"):
        return wire
    try:
        decoded = base64.urlsafe_b64decode(wire + "=" * (-len(wire) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return wire
    return decoded if decoded.startswith("gs://") else wire


def gcs_uri(bucket: str) -> str:
    """`gs://bucket` from a bucket name or a `gs://` URI."""
    return bucket if bucket.startswith("gs://") else f"gs://{bucket}"


class GcsFiles(ProviderFiles):
    """Vertex files are GCS objects under `<prefix>/vertex-files/<uuid>/`; ids travel
    base64url-encoded on the unified API."""

    storage_backend = "gcs"

    def upload_id(self, filename: str, fields: Mapping[str, str]) -> str:
        bucket = fields.get("gcs_bucket")
        if not bucket:
            raise ApiError(None, NO_BUCKET, bifrost=True)
        parts = [fields.get("gcs_prefix") or "", "vertex-files", str(uuid.uuid4()), filename]
        return objects.join(gcs_uri(bucket), *[p for p in parts if p])

    def stored_id(self, wire_id: str) -> str:
        return decode_gs(wire_id)

    def wire_id(self, file_id: str) -> str:
        return encode_gs(file_id)

    def view(
        self, record: FileRecord, *, listing: bool = False, uploaded: bool = False
    ) -> dict[str, Any]:
        body = super().view(record, listing=listing, uploaded=uploaded)
        if not listing:
            body["storage_uri"] = record.id
        return body

    def listing(self, store: Store, query: Mapping[str, str]) -> list[FileRecord]:
        bucket = query.get("gcs_bucket")
        if not bucket:
            raise ApiError(None, NO_BUCKET, bifrost=True)
        return objects.list_objects(
            store, objects.join(gcs_uri(bucket), query.get("gcs_prefix") or "")
        )

    def find(self, store: Store, file_id: str) -> FileRecord | None:
        uri = self.stored_id(file_id)
        if not uri.startswith("gs://"):
            raise ApiError(None, f"invalid GCS URI: {file_id}", bifrost=True)
        return objects.get_object(store, uri)

    def not_found(self, file_id: str) -> ApiError:
        return google_error(404, f"No such object: {self.stored_id(file_id)}")


class VertexBatches(ProviderBatches):
    """QUEUED/PENDING read as validating, RUNNING in_progress, SUCCEEDED and
    PARTIALLY_SUCCEEDED completed."""

    name = "vertex"
    uses_finalizing = False

    def __init__(self) -> None:
        self.files = GcsFiles(self.name)

    def normalize_id(self, rt: Runtime, batch_id: str) -> str:
        """A bare numeric id resolves against the configured project and region."""
        if batch_id.isdigit():
            return f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/{batch_id}"
        return batch_id

    def not_found(self, batch_id: str) -> ApiError:
        return google_error(404, f'The BatchPredictionJob "{batch_id}" does not exist.')

    def refuse_cancel(self, batch: BatchRecord) -> None:
        raise google_error(
            400,
            f"BatchPredictionJob {batch.id} is in state {native_state(batch)} and cannot be cancelled.",
        )

    # routes
    def create(self, rt: Runtime, body: dict[str, Any]) -> BatchRecord:
        model = body.get("model")
        bare = (
            model.partition("/")[2]
            if isinstance(model, str) and model.startswith("vertex/")
            else model
        )
        if not bare:
            raise ApiError(None, "model is required for Vertex batch API", bifrost=True)
        folder = body.get("output_folder")
        output_url = folder.get("url") if isinstance(folder, dict) else None
        if not isinstance(output_url, str) or not output_url.startswith("gs://"):
            raise ApiError(
                None,
                "output_folder.url (gs:// prefix) is required for Vertex batch API",
                bifrost=True,
            )
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else None
        job_name = (
            body.get("display_name")
            or (metadata or {}).get("job_name")
            or f"bifrost-batch-{int(time.time())}"
        )
        input_uri = body.get("input_file_id")
        if input_uri:
            input_uri = decode_gs(str(input_uri))
        else:
            input_uri = self._upload_inline(rt, output_url, job_name, body.get("requests") or [])
        job_number = str(random.SystemRandom().randrange(10**18, 10**19))
        now, deadline, expires = timeline(rt, "24h")
        batch = BatchRecord(
            id=f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/{job_number}",
            provider=self.name,
            model=str(bare),
            input_file_id=input_uri,
            metadata=metadata,
            created_ts=now,
            deadline_ts=deadline,
            expires_ts=expires,
            hidden_until=now + rt.config.retrieve_404_seconds,
            status="validating",
            native={"display_name": job_name, "output_url": output_url},
        )
        rt.store.save_batch(batch, new=True)
        return batch

    def _upload_inline(self, rt: Runtime, output_url: str, job_name: str, requests: Any) -> str:
        """Each item's body (or params) converted as for Gemini, custom_id in the labels."""
        _, bucket, _ = objects.split_uri(output_url)
        uri = f"gs://{bucket}/input/vertex-files/{uuid.uuid4()}/{job_name}-input.jsonl"
        lines = []
        for item in requests if isinstance(requests, list) else []:
            item = item if isinstance(item, dict) else {}
            source = item.get("body") if item.get("body") is not None else item.get("params")
            request = (
                to_gemini_request(source) if "messages" in (source or {}) else dict(source or {})
            )
            request["labels"] = {"bifrost_custom_id": item.get("custom_id", "")}
            lines.append(json_line({"request": request}))
        objects.put_object(rt.store, uri, b"".join(lines), content_type="application/jsonl")
        return uri

    def _counts(self, batch: BatchRecord) -> dict[str, int]:
        incomplete = batch.total - batch.succeeded - batch.failed
        return {
            "total": batch.succeeded + batch.failed + incomplete,
            "completed": batch.succeeded,
            "failed": batch.failed,
        }

    def create_view(self, batch: BatchRecord) -> dict[str, Any]:
        return drop_none(
            {
                "id": batch.id,
                "object": "batch",
                "input_file_id": batch.input_file_id,
                "status": batch.status,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "created_at": seconds(batch.created_ts),
                "metadata": batch.metadata,
            }
        )

    def view(self, batch: BatchRecord) -> dict[str, Any]:
        """`endTime` lands in the timestamp of the final status."""
        times = {
            name: seconds(value)
            for name, value in batch.times.items()
            if name in ("in_progress_at", "completed_at", "failed_at", "cancelled_at", "expired_at")
        }
        errors = {"object": "list", "data": batch.errors} if batch.errors else None
        return drop_none(
            {
                **self.create_view(batch),
                "request_counts": self._counts(batch),
                "output_file_id": batch.output_file_id,
                "errors": errors,
                **times,
            }
        )

    def cancel_view(self, batch: BatchRecord) -> dict[str, Any]:
        """Bifrost answers a synthetic body after `:cancel`."""
        return {
            "id": batch.id,
            "object": "batch",
            "status": "cancelling",
            "cancelling_at": int(time.time()),
        }

    def results(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """The `predictions*` objects of the job's output directory; errors carry no code and
        malformed lines are skipped silently."""
        if not batch.output_file_id:
            raise ApiError(
                None,
                f"batch output is not available yet (job state: {native_state(batch)})",
                bifrost=True,
            )
        items: list[dict[str, Any]] = []
        for record in objects.list_objects(rt.store, batch.output_file_id):
            if not record.id.rsplit("/", 1)[-1].startswith("predictions"):
                continue
            with rt.store.file_data(record.id).open("rb") as source:
                for line in source:
                    try:
                        native = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(native, dict):
                        items.append(result_item(native))
        return {"batch_id": batch.id, "results": items, "parse_errors": []}

    # worker hooks
    def input_path(self, rt: Runtime, batch: BatchRecord) -> Path:
        return rt.store.file_data(batch.input_file_id or "")

    def validate(self, rt: Runtime, batch: BatchRecord) -> None:
        """The input object must exist; the job then runs over its lines."""
        source = objects.get_object(rt.store, batch.input_file_id or "")
        total = 0
        if source is not None:
            with rt.store.file_data(source.id).open("rb") as handle:
                total = sum(1 for line in handle if line.strip())
        missing = f"Input {batch.input_file_id} does not exist."
        end_validation(rt, batch, total, None if source else [{"code": "5", "message": missing}])

    def answer_line(self, rt: Runtime, batch: BatchRecord, line: bytes) -> LineOutcome:
        """`{"request":{...}}` -> `{status, processed_time, request, response}`."""
        config = rt.config
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        try:
            request = orjson.loads(line).get("request")
        except (orjson.JSONDecodeError, AttributeError):
            request = None
        labels = request.get("labels") if isinstance(request, dict) else None
        custom_id = labels.get("bifrost_custom_id") if isinstance(labels, dict) else None
        try:
            response = fake_native.generate_content(
                request,
                model=batch.model or "",
                seed_key=f"{batch.id}:{custom_id}",
                draws=fake_native.Draws(config.error_rate, config.bad_answer_rate, config.seed),
            )
        except RequestFailure as failure:
            status = f"{failure.google_error()['status']}: {failure.message}"
            record = {"status": status, "processed_time": stamp, "request": request}
            return LineOutcome("failed", out=json_line(record))
        record = {"status": "", "processed_time": stamp, "request": request, "response": response}
        return LineOutcome("succeeded", out=json_line(record))

    def give_up_line(self, batch: BatchRecord, line: bytes, reason: GiveUpReason) -> LineOutcome:
        return LineOutcome(reason)

    def publish(self, rt: Runtime, batch: BatchRecord) -> None:
        """Predictions land in `<output_folder>/prediction-model-<time>/predictions.jsonl`."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        directory = objects.join(str(batch.native["output_url"]), f"prediction-model-{stamp}") + "/"
        part = rt.store.batch_path(batch.id, "out.part")
        if part.exists() and part.stat().st_size:
            malformed = rt.faults.take("malformed_output")
            if malformed is not None:
                corrupt_lines(part, malformed.lines)
                rt.counters.fault_fired("malformed_output")
            objects.put_object(rt.store, directory + "predictions.jsonl", part)
        else:
            part.unlink(missing_ok=True)
        batch.output_file_id = directory


def result_item(native: dict[str, Any]) -> dict[str, Any]:
    """One prediction line: custom_id from the request's labels ("" without them)."""
    request = as_dict(native.get("request"))
    labels = as_dict(request.get("labels"))
    custom_id = str(labels.get("bifrost_custom_id", ""))
    if native.get("status"):
        return {"custom_id": custom_id, "error": {"code": "", "message": str(native["status"])}}
    return {
        "custom_id": custom_id,
        "response": {"status_code": 200, "body": native.get("response")},
    }
