"""Bedrock model-invocation jobs behind Bifrost, over the emulator's simulated S3: ARN ids,
`role_arn`/`output_s3_uri`/`model` required, inline items written as `{recordId, modelInput}`
records, job statuses mapped as Bifrost maps them (PartiallyCompleted reads `failed`), and
`/results` parsed from every `.jsonl.out`/`.jsonl` object under the output prefix (report
section 3)."""

from __future__ import annotations

import re
import time
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
    read_result_lines,
    seconds,
    window_seconds,
)
from batch_pipeline.emulator.errors import ApiError
from batch_pipeline.emulator.fake_model import RequestFailure
from batch_pipeline.emulator.files import ProviderFiles
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord, FileRecord, Store, new_id

REGION = "us-east-1"
ACCOUNT = "123456789012"
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*$")
# Bedrock job status -> Bifrost status; a terminal one is kept in `native["final"]`.
STATUSES = {
    "Submitted": "validating",
    "Validating": "validating",
    "Scheduled": "validating",
    "InProgress": "in_progress",
    "Completed": "completed",
    "Failed": "failed",
    "PartiallyCompleted": "failed",
    "Stopping": "cancelling",
    "Stopped": "cancelled",
    "Expired": "expired",
}
NATIVE = {
    "validating": "Validating",
    "in_progress": "InProgress",
    "completed": "Completed",
    "failed": "Failed",
    "cancelling": "Stopping",
    "cancelled": "Stopped",
    "expired": "Expired",
}
NO_BUCKET = "s3_bucket is required for Bedrock file operations (provide in storage_config.s3 or extra_params)"


def bedrock_error(status: int, kind: str, message: str) -> ApiError:
    """An upstream AWS error passed through by Bifrost."""
    return ApiError(status, message, type=kind)


def native_status(batch: BatchRecord) -> str:
    """Bedrock's own job status."""
    final = batch.native.get("final")
    if final and batch.status in ("completed", "failed", "cancelled", "expired"):
        return str(final)
    return NATIVE.get(batch.status, batch.status)


def bucket_uri(bucket: str) -> str:
    """`s3://bucket/prefix/` from `bucket` or an `s3://` URI."""
    return bucket if bucket.startswith("s3://") else f"s3://{bucket}"


class S3Files(ProviderFiles):
    """Bedrock files are S3 objects: uploads need a bucket; ids are `s3://bucket/key`."""

    storage_backend = "s3"

    def upload_id(self, filename: str, fields: Mapping[str, str]) -> str:
        bucket = fields.get("s3_bucket")
        if not bucket:
            raise ApiError(None, NO_BUCKET, bifrost=True)
        prefix = fields.get("s3_prefix") or ""
        name = filename or f"file-{time.time_ns()}.jsonl"
        return (
            objects.join(bucket_uri(bucket), prefix, name)
            if prefix
            else objects.join(bucket_uri(bucket), name)
        )

    def view(
        self, record: FileRecord, *, listing: bool = False, uploaded: bool = False
    ) -> dict[str, Any]:
        body = super().view(record, listing=listing, uploaded=uploaded)
        if listing:
            body["purpose"] = "batch"
        else:
            body["storage_uri"] = record.id
        return body

    def listing(self, store: Store, query: Mapping[str, str]) -> list[FileRecord]:
        bucket = query.get("s3_bucket")
        if not bucket:
            raise ApiError(None, NO_BUCKET, bifrost=True)
        prefix = objects.join(bucket_uri(bucket), query.get("s3_prefix") or "")
        return objects.list_objects(store, prefix)

    def find(self, store: Store, file_id: str) -> FileRecord | None:
        if not file_id.startswith("s3://") or "/" not in file_id[5:]:
            raise ApiError(None, "invalid S3 URI format, expected s3://bucket/key", bifrost=True)
        return objects.get_object(store, file_id)

    def not_found(self, file_id: str) -> ApiError:
        return ApiError(404, "The specified key does not exist.", type="NoSuchKey")


class BedrockBatches(ProviderBatches):
    """Submitted/Validating -> InProgress -> Completed | PartiallyCompleted | Failed; stop ->
    Stopping -> Stopped."""

    name = "bedrock"
    uses_finalizing = False

    def __init__(self) -> None:
        self.files = S3Files(self.name)

    def not_found(self, batch_id: str) -> ApiError:
        return bedrock_error(
            404, "ResourceNotFoundException", f"The specified job {batch_id} was not found."
        )

    def refuse_cancel(self, batch: BatchRecord) -> None:
        raise bedrock_error(
            400,
            "ValidationException",
            f"The job {batch.id} is in status {native_status(batch)} and cannot be stopped.",
        )

    # routes
    def create(self, rt: Runtime, body: dict[str, Any]) -> BatchRecord:
        """Bifrost's checks in its order, then the job; inline items become records uploaded
        next to the output prefix (`bifrost-batch-input/<job>-<ns>.jsonl`)."""
        role_arn = body.get("role_arn") or rt.config.bedrock_role_arn
        if not role_arn:
            raise ApiError(
                None,
                "role_arn is required for Bedrock batch API (provide in extra_params)",
                bifrost=True,
            )
        output_uri = body.get("output_s3_uri")
        if not isinstance(output_uri, str) or not output_uri:
            raise ApiError(
                None,
                "output_s3_uri is required for Bedrock batch API (provide in extra_params)",
                bifrost=True,
            )
        model = body.get("model")
        model_id = (
            model.partition("/")[2]
            if isinstance(model, str) and model.startswith("bedrock/")
            else model
        )
        if not model_id:
            raise ApiError(None, "model is required for Bedrock batch API", bifrost=True)
        try:
            _, bucket, _ = objects.split_uri(output_uri)
        except objects.ObjectUriError:
            raise bedrock_error(
                400, "ValidationException", f"Invalid S3 URI: {output_uri}"
            ) from None
        metadata = as_dict(body.get("metadata"))
        job_name = metadata.get("job_name") or f"bifrost-batch-{int(time.time())}"
        self._check_job_name(rt, job_name)
        window = body.get("completion_window") or "24h"
        hours = int((window_seconds(window) or 0) // 3600)
        if not 24 <= hours <= 168:
            raise bedrock_error(
                400, "ValidationException", "timeoutDurationInHours must be between 24 and 168."
            )
        input_uri = body.get("input_file_id")
        if not input_uri:
            input_uri = self._upload_records(rt, bucket, job_name, body.get("requests") or [])
        now = time.time()
        batch = BatchRecord(
            id=f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/{new_id('', 12).lower()}",
            provider=self.name,
            model=str(model_id),
            input_file_id=input_uri,
            completion_window=window,
            created_ts=now,
            deadline_ts=now + rt.config.completion_window_seconds * hours / 24,
            expires_ts=now + hours * 3600,
            hidden_until=now + rt.config.retrieve_404_seconds,
            status="validating",
            native={
                "job_name": job_name,
                "role_arn": role_arn,
                "output_s3_uri": output_uri,
            },
        )
        rt.store.save_batch(batch, new=True)
        return batch

    def _check_job_name(self, rt: Runtime, job_name: str) -> None:
        if len(job_name) > 63 or not JOB_NAME.match(job_name):
            raise bedrock_error(400, "ValidationException", f"Invalid job name: {job_name}")
        for other in rt.store.provider_batches(self.name):
            if other.native.get("job_name") == job_name:
                raise bedrock_error(
                    400,
                    "ValidationException",
                    f"A model invocation job with the name {job_name} already exists.",
                )

    def _upload_records(self, rt: Runtime, bucket: str, job_name: str, requests: Any) -> str:
        """Bifrost's ConvertBedrockRequestsToJSONL: the body (or params) without `model`,
        copied verbatim; no conversion to the model's native format."""
        uri = f"s3://{bucket}/bifrost-batch-input/{job_name}-{time.time_ns()}.jsonl"
        lines = []
        for item in requests if isinstance(requests, list) else []:
            item = item if isinstance(item, dict) else {}
            source = item.get("body") if item.get("body") is not None else item.get("params")
            model_input = {k: v for k, v in (source or {}).items() if k != "model"}
            lines.append(
                json_line({"modelInput": model_input, "recordId": item.get("custom_id", "")})
            )
        objects.put_object(rt.store, uri, b"".join(lines), content_type="application/jsonl")
        return uri

    def _counts(self, rt: Runtime, batch: BatchRecord) -> dict[str, int]:
        """From `<output_s3_uri>/manifest.json.out`, where Bifrost looks; Bedrock writes the
        manifest one level down, so these are usually zeros."""
        output_uri = str(batch.native.get("output_s3_uri", ""))
        manifest = objects.get_object(rt.store, objects.join(output_uri, "manifest.json.out"))
        if manifest is None:
            return {"total": 0, "completed": 0, "failed": 0}
        data = orjson.loads(rt.store.file_data(manifest.id).read_bytes())
        errors = int(data.get("errorRecordCount", 0))
        return {
            "total": int(data.get("totalRecordCount", 0)),
            "completed": int(data.get("processedRecordCount", 0)) - errors,
            "failed": errors,
        }

    def create_view(self, batch: BatchRecord) -> dict[str, Any]:
        return {
            "id": batch.id,
            "object": "batch",
            "input_file_id": batch.input_file_id,
            "status": batch.status,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "created_at": seconds(batch.created_ts),
            "expires_at": seconds(batch.expires_ts),
        }

    def retrieve_view(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """Retrieve reads the counts from the manifest."""
        return {**self.view(batch), "request_counts": self._counts(rt, batch)}

    def view(self, batch: BatchRecord) -> dict[str, Any]:
        ended = next(
            (
                batch.times[k]
                for k in ("completed_at", "failed_at", "cancelled_at", "expired_at")
                if k in batch.times
            ),
            None,
        )
        errors = {"object": "list", "data": batch.errors} if batch.errors else None
        return drop_none(
            {
                **self.create_view(batch),
                "output_file_id": batch.native.get("output_s3_uri"),
                "completed_at": seconds(ended),
                "errors": errors,
                "metadata": {"job_name": batch.native.get("job_name"), "model_id": batch.model},
            }
        )

    def list_view(self, batch: BatchRecord) -> dict[str, Any]:
        return {
            "id": batch.id,
            "object": "batch",
            "status": batch.status,
            "created_at": seconds(batch.created_ts),
            "metadata": {"job_name": batch.native.get("job_name"), "model_id": batch.model},
        }

    def cancel_view(self, batch: BatchRecord) -> dict[str, Any]:
        """StopModelInvocationJob, then a retrieve: the status as it is now."""
        return {"id": batch.id, "object": "batch", "status": batch.status}

    def results(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """No status check: whatever `.jsonl.out`/`.jsonl` objects exist under the output
        prefix are parsed, this job's or not."""
        output_uri = str(batch.native.get("output_s3_uri", ""))
        items: list[dict[str, Any]] = []
        parse_errors: list[dict[str, Any]] = []
        for record in objects.list_objects(rt.store, output_uri):
            if not record.id.endswith((".jsonl.out", ".jsonl")):
                continue
            found, problems = read_result_lines(
                rt.store.file_data(record.id), lambda native, _: result_item(native)
            )
            items += found
            parse_errors += problems
        return {"batch_id": batch.id, "results": items, "parse_errors": parse_errors}

    # worker hooks
    def input_path(self, rt: Runtime, batch: BatchRecord) -> Path:
        return rt.store.file_data(batch.input_file_id or "")

    def validate(self, rt: Runtime, batch: BatchRecord) -> None:
        """Bedrock's job validation: the input object must exist and hold between the minimum
        and the maximum number of records; otherwise the job fails with a message."""
        problem = None
        total = 0
        source = objects.get_object(rt.store, batch.input_file_id or "")
        if source is None:
            problem = f"The input S3 object {batch.input_file_id} does not exist."
        else:
            with rt.store.file_data(source.id).open("rb") as handle:
                total = sum(1 for line in handle if line.strip())
            low, high = rt.config.bedrock_min_records, rt.config.bedrock_max_records
            if total < low:
                problem = f"The number of records ({total}) is below the minimum of {low} records per job."
            elif total > high:
                problem = f"The number of records ({total}) exceeds the maximum of {high} records per job."
        if problem is not None:
            batch.native["final"] = "Failed"
        end_validation(rt, batch, total, None if problem is None else [{"message": problem}])

    def answer_line(self, rt: Runtime, batch: BatchRecord, line: bytes) -> LineOutcome:
        """One record -> `{recordId, modelInput, modelOutput}` or with `error{errorCode,
        errorMessage}`."""
        config = rt.config
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            error = {"errorCode": 400, "errorMessage": "Malformed input record: not a JSON object"}
            return LineOutcome("failed", out=json_line({"error": error}))
        record_id = record.get("recordId")
        model_input = record.get("modelInput")
        head = {"recordId": record_id, "modelInput": model_input}
        try:
            output = fake_native.bedrock_output(
                model_input,
                model_id=batch.model or "",
                seed_key=f"{batch.id}:{record_id}",
                draws=fake_native.Draws(config.error_rate, config.bad_answer_rate, config.seed),
            )
        except RequestFailure as failure:
            error = {"errorCode": failure.status, "errorMessage": failure.message}
            return LineOutcome("failed", out=json_line({**head, "error": error}))
        return LineOutcome("succeeded", out=json_line({**head, "modelOutput": output}))

    def give_up_line(self, batch: BatchRecord, line: bytes, reason: GiveUpReason) -> LineOutcome:
        """Records not processed before a stop or expiry have no output."""
        return LineOutcome(reason)

    def final_status(self, batch: BatchRecord) -> str:
        """Completed, or PartiallyCompleted/Failed when records errored: Bifrost reads both
        as `failed`."""
        if batch.failed == 0:
            final = "Completed"
        else:
            final = "Failed" if batch.succeeded == 0 else "PartiallyCompleted"
        batch.native["final"] = final
        return STATUSES[final]

    def publish(self, rt: Runtime, batch: BatchRecord) -> None:
        """Write `<output>/<job id>/<input name>.out` and the job's `manifest.json.out` there."""
        if batch.status == "cancelling":
            batch.native["final"] = "Stopped"
        elif batch.expire_requested or time.time() >= batch.deadline_ts:
            batch.native["final"] = "Expired"
        job_dir = objects.join(str(batch.native["output_s3_uri"]), batch.id.rsplit("/", 1)[-1])
        input_name = (batch.input_file_id or "input.jsonl").rsplit("/", 1)[-1]
        part = rt.store.batch_path(batch.id, "out.part")
        if part.exists() and part.stat().st_size:
            malformed = rt.faults.take("malformed_output")
            if malformed is not None:
                corrupt_lines(part, malformed.lines)
                rt.counters.fault_fired("malformed_output")
            objects.put_object(rt.store, objects.join(job_dir, f"{input_name}.out"), part)
        else:
            part.unlink(missing_ok=True)
        manifest = {
            "totalRecordCount": batch.total,
            "processedRecordCount": batch.succeeded + batch.failed,
            "successRecordCount": batch.succeeded,
            "errorRecordCount": batch.failed,
        }
        objects.put_object(
            rt.store, objects.join(job_dir, "manifest.json.out"), orjson.dumps(manifest)
        )


def result_item(native: dict[str, Any]) -> dict[str, Any]:
    """One output record as Bifrost's parseBatchResultsJSONL returns it (modelInput dropped)."""
    item: dict[str, Any] = {"custom_id": native.get("recordId") or ""}
    error = native.get("error")
    if isinstance(error, dict):
        code = error.get("errorCode", 0)
        item["response"] = {"status_code": code}
        item["error"] = {"code": str(code), "message": str(error.get("errorMessage", ""))}
    elif "modelOutput" in native:
        output = native["modelOutput"]
        if isinstance(output, dict):
            item["response"] = {"status_code": 200, "body": output}
        else:
            item["error"] = {
                "code": "parse_error",
                "message": "failed to parse model output: not a JSON object",
            }
    return item
