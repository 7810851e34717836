"""OpenAI (and Azure) batches behind Bifrost: file-based, validated, with output and error files."""

from __future__ import annotations

import os
import time
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
    end_validation,
    json_line,
    read_result_lines,
    seconds,
    timeline,
)
from batch_pipeline.emulator.errors import ApiError, openai_not_found
from batch_pipeline.emulator.faults import OUTPUT_LIES, lie_in_output
from batch_pipeline.emulator.files import ProviderFiles
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord, derived_id, new_id
from batch_pipeline.providers import BATCH_ENDPOINTS

OPENAI_ENDPOINTS = tuple(e for e in BATCH_ENDPOINTS if e != "/v1/messages")
MAX_REPORTED_ERRORS = 1000
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
# Bifrost's BatchRequestItem: what survives the re-marshalling of an inline item.
ITEM_KEYS = ("custom_id", "method", "url", "body", "params")


def remarshal_item(item: Any) -> dict[str, Any]:
    """An inline item as Bifrost serialises it: its known keys only, empty ones omitted."""
    if not isinstance(item, dict):
        return {"custom_id": ""}
    kept = {key: item[key] for key in ITEM_KEYS[1:] if item.get(key)}
    return {"custom_id": item.get("custom_id") or "", **kept}


def _invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, type="invalid_request_error", param=param, code=code)


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    """OpenAI's metadata rules: at most 16 string pairs, keys <= 64 and values <= 512 chars."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _invalid("Invalid type for 'metadata': expected an object of strings.", "metadata")
    if len(metadata) > 16:
        raise _invalid("Invalid 'metadata': too many properties. Expected at most 16.", "metadata")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise _invalid(
                "Invalid 'metadata': keys must be at most 64 and values at most 512 characters.",
                "metadata",
            )
    return metadata


class OpenAIBatches(ProviderBatches):
    """OpenAI's Batch API: validating -> in_progress -> finalizing -> completed."""

    def __init__(self, name: str = "openai") -> None:
        self.name = name
        self.files = ProviderFiles(name)

    def not_found(self, batch_id: str) -> ApiError:
        return openai_not_found(f"No such batch: {batch_id}")

    def refuse_cancel(self, batch: BatchRecord) -> None:
        raise ApiError(
            409,
            f"Cannot cancel a batch with status '{batch.status}'.",
            type="invalid_request_error",
        )

    # routes
    def create(self, rt: Runtime, body: dict[str, Any]) -> BatchRecord:
        endpoint, window, metadata = self._check_create(body)
        file_id = body.get("input_file_id")
        if body.get("requests") and not file_id:
            file_id = self._upload_inline(rt, body["requests"])
        source = rt.store.live_file(file_id, self.name) if isinstance(file_id, str) else None
        if source is None:
            raise openai_not_found(f"No such File object: {file_id}")
        if source.purpose != "batch":
            raise _invalid(
                f"The input file {file_id} must be uploaded with purpose 'batch'.", "input_file_id"
            )
        return self._new_batch(rt, body, endpoint, window, metadata, file_id)

    def _check_create(self, body: dict[str, Any]) -> tuple[str, str, dict[str, str] | None]:
        """(endpoint, completion window, metadata) after OpenAI's checks of a create."""
        endpoint = body.get("endpoint")
        if not endpoint:
            raise ApiError(None, "endpoint is required for OpenAI batch API", bifrost=True)
        if endpoint not in OPENAI_ENDPOINTS:
            raise _invalid(
                f"Invalid value for 'endpoint': '{endpoint}'. Supported values are: "
                + ", ".join(f"'{e}'" for e in OPENAI_ENDPOINTS)
                + ".",
                "endpoint",
                "invalid_value",
            )
        window = body.get("completion_window") or "24h"
        if window != "24h":
            raise _invalid(
                f"Invalid value for 'completion_window': '{window}'. Supported values are: '24h'.",
                "completion_window",
                "invalid_value",
            )
        return str(endpoint), str(window), _check_metadata(body.get("metadata"))

    def _new_batch(
        self,
        rt: Runtime,
        body: dict[str, Any],
        endpoint: str,
        window: str,
        metadata: dict[str, str] | None,
        file_id: str | None,
        native: dict[str, Any] | None = None,
    ) -> BatchRecord:
        """Store a new `validating` batch."""
        now, deadline, expires = timeline(rt, window)
        batch = BatchRecord(
            id=new_id("batch_"),
            provider=self.name,
            endpoint=endpoint,
            model=body.get("model"),
            input_file_id=file_id,
            completion_window=window,
            metadata=metadata,
            created_ts=now,
            deadline_ts=deadline,
            expires_ts=expires,
            hidden_until=now + rt.config.retrieve_404_seconds,
            status="validating",
            native=native or {},
        )
        rt.store.save_batch(batch, new=True)
        return batch

    def _upload_inline(self, rt: Runtime, requests: Any) -> str:
        """Bifrost's inline path for OpenAI: items re-marshalled to `batch_requests.jsonl`."""
        if not isinstance(requests, list):
            raise _invalid("Invalid type for 'requests': expected an array.", "requests")
        file_id = new_id("file-")
        with rt.store.file_data(file_id).open("wb") as target:
            for item in requests:
                target.write(json_line(remarshal_item(item)))
        rt.store.register_file(file_id, self.name, "batch_requests.jsonl", "batch")
        return file_id

    def _counts(self, batch: BatchRecord) -> dict[str, int]:
        return {"total": batch.total, "completed": batch.succeeded, "failed": batch.failed}

    def create_view(self, batch: BatchRecord) -> dict[str, Any]:
        return drop_none(
            {
                "id": batch.id,
                "object": "batch",
                "endpoint": batch.endpoint,
                "input_file_id": batch.input_file_id,
                "completion_window": batch.completion_window,
                "status": batch.status,
                "request_counts": self._counts(batch),
                "metadata": batch.metadata,
                "created_at": seconds(batch.created_ts),
                "expires_at": seconds(batch.expires_ts or batch.deadline_ts),
            }
        )

    def view(self, batch: BatchRecord) -> dict[str, Any]:
        times = {name: seconds(value) for name, value in batch.times.items()}
        errors = {"object": "list", "data": batch.errors} if batch.errors else None
        return drop_none(
            {
                **self.create_view(batch),
                **times,
                "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id,
                "errors": errors,
            }
        )

    def cancel_view(self, batch: BatchRecord) -> dict[str, Any]:
        return drop_none(
            {
                "id": batch.id,
                "object": "batch",
                "status": batch.status,
                "request_counts": self._counts(batch),
                "cancelling_at": seconds(batch.times.get("cancelling_at")),
                "cancelled_at": seconds(batch.times.get("cancelled_at")),
            }
        )

    def results(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """Bifrost reads only the output file; the error file is never merged."""
        if not batch.output_file_id:
            raise ApiError(
                None,
                "batch results not available: output_file_id is empty (batch may not be completed)",
                bifrost=True,
            )
        return read_output(rt.store.file_data(batch.output_file_id), batch.id)

    # worker hooks
    def input_path(self, rt: Runtime, batch: BatchRecord) -> Path:
        return rt.store.file_data(batch.input_file_id or "")

    def validate(self, rt: Runtime, batch: BatchRecord) -> None:
        """OpenAI's input checks, with 1-based line numbers in `errors.data`."""
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        first_model: str | None = None
        total = 0
        limit = rt.config.max_requests_per_batch

        def report(line: int | None, code: str, message: str, param: str | None = None) -> None:
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(
                    drop_none({"code": code, "message": message, "param": param, "line": line})
                )

        path = self.input_path(rt, batch)
        with path.open("rb") as source:
            for number, raw in enumerate(source, start=1):
                if not raw.strip():
                    continue
                total += 1
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    report(number, "invalid_json_line", "This line is not parseable as valid JSON.")
                    continue
                if not isinstance(line, dict):
                    report(number, "invalid_json_line", "This line is not a JSON object.")
                    continue
                custom_id = line.get("custom_id")
                if not isinstance(custom_id, str) or not custom_id:
                    report(
                        number,
                        "missing_required_parameter",
                        "Missing required parameter: 'custom_id'.",
                        "custom_id",
                    )
                elif custom_id in seen:
                    report(
                        number,
                        "duplicate_custom_id",
                        "The custom_id for this request is a duplicate of another request. The "
                        "custom_id parameter must be unique for each individual request in a batch.",
                        "custom_id",
                    )
                elif total <= limit:
                    seen.add(custom_id)
                if line.get("method") != "POST":
                    report(
                        number,
                        "invalid_method",
                        "The method for this request must be 'POST'.",
                        "method",
                    )
                if line.get("url") != batch.endpoint:
                    report(
                        number,
                        "invalid_url",
                        f"The URL provided for this request does not match the batch endpoint "
                        f"'{batch.endpoint}'.",
                        "url",
                    )
                body = line.get("body")
                if not isinstance(body, dict):
                    report(
                        number,
                        "missing_required_parameter",
                        "Missing required parameter: 'body'.",
                        "body",
                    )
                    continue
                model = body.get("model")
                if isinstance(model, str):
                    if first_model is None:
                        first_model = model
                    elif model != first_model:
                        report(
                            number,
                            "mismatched_model",
                            f"The provided model '{model}' does not match the model "
                            f"'{first_model}' of the other requests; a batch can only use one model.",
                            "body.model",
                        )
        if total == 0:
            report(None, "empty_file", "The batch input file is empty.")
        if total > limit:
            report(
                None,
                "too_many_requests",
                f"The batch input file contains {total} requests; the maximum is {limit}.",
            )
        end_validation(rt, batch, total, errors)

    def answer_line(self, rt: Runtime, batch: BatchRecord, line: bytes) -> LineOutcome:
        request = orjson.loads(line)
        custom_id = request["custom_id"]
        seed_key = f"{batch.id}:{custom_id}"
        config = rt.config
        body = request["body"]
        line_id = derived_id("batch_req_", seed_key, 32)
        request_id = derived_id("req_", seed_key + ":request", 32)
        try:
            model = body.get("model")
            if isinstance(model, str) and "/" in model:
                raise fake_model.RequestFailure(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    type="invalid_request_error",
                    code="model_not_found",
                )
            answer = fake_model.respond(
                request["url"],
                body,
                seed_key=seed_key,
                created=int(time.time()),
                error_rate=config.error_rate,
                bad_answer_rate=config.bad_answer_rate,
                seed=config.seed,
                default_dimensions=config.embedding_dimensions,
            )
        except fake_model.RequestFailure as failure:
            response = {
                "status_code": failure.status,
                "request_id": request_id,
                "body": failure.openai_body(),
            }
            record = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
            return LineOutcome("failed", err=json_line(record))
        response = {"status_code": 200, "request_id": request_id, "body": answer}
        record = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
        return LineOutcome("succeeded", out=json_line(record))

    def give_up_line(self, batch: BatchRecord, line: bytes, reason: GiveUpReason) -> LineOutcome:
        """Expired requests get a `batch_expired` error line; cancelled ones get no line."""
        if reason == "canceled":
            return LineOutcome("canceled")
        try:
            custom_id = orjson.loads(line).get("custom_id")
        except (orjson.JSONDecodeError, AttributeError):
            return LineOutcome("expired")
        record = {
            "id": derived_id("batch_req_", f"{batch.id}:{custom_id}", 32),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE},
        }
        return LineOutcome("expired", err=json_line(record))

    def publish(self, rt: Runtime, batch: BatchRecord) -> None:
        """Register the output and error files (only the non-empty ones, as OpenAI does)."""
        malformed = rt.faults.take("malformed_output")
        lies = [lie for kind in OUTPUT_LIES if (lie := rt.faults.take(kind)) is not None]
        for suffix, kind in (("out.part", "output"), ("err.part", "error")):
            part = rt.store.batch_path(batch.id, suffix)
            file_id = derived_id("file-", f"{batch.id}:{kind}")
            data = rt.store.file_data(file_id)
            if part.exists():
                if part.stat().st_size == 0:
                    part.unlink()
                    continue
                if kind == "output" and malformed is not None:
                    corrupt_lines(part, malformed.lines)
                    rt.counters.fault_fired("malformed_output")
                for lie in lies if kind == "output" else []:
                    lie_in_output(part, lie)
                    rt.counters.fault_fired(lie.kind)
                os.replace(part, data)
            if not data.exists():
                continue
            rt.store.register_file(file_id, self.name, f"{batch.id}_{kind}.jsonl", "batch_output")
            if kind == "output":
                batch.output_file_id = file_id
            else:
                batch.error_file_id = file_id


def read_output(path: Path, batch_id: str) -> dict[str, Any]:
    """An OpenAI output file as Bifrost's /results: each line's custom_id, response and error."""
    items, parse_errors = read_result_lines(path, lambda parsed, _: _result_item(parsed))
    return {"batch_id": batch_id, "results": items, "parse_errors": parse_errors}


def _result_item(parsed: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI output line as Bifrost's item: its custom_id, response and error."""
    item = {"custom_id": parsed.get("custom_id"), "response": parsed.get("response")}
    if parsed.get("error") is not None:
        item["error"] = parsed["error"]
    return drop_none(item)
