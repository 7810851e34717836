"""Azure OpenAI batches behind Bifrost: OpenAI's behaviour plus blob input (`input_blob` and
`output_folder`, newer Bifrost), over the emulator's simulated blob storage (report section 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batch_pipeline.emulator import objects
from batch_pipeline.emulator.batches import corrupt_lines, drop_none
from batch_pipeline.emulator.errors import ApiError
from batch_pipeline.emulator.openai_batches import OpenAIBatches, _invalid, read_output
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord

NO_OUTPUT = (
    "batch results not available: neither output_file_id nor output_blob is set "
    "(batch may not be completed yet)"
)


class AzureBatches(OpenAIBatches):
    """Azure: an `input_file_id` wins; otherwise `input_blob` + `output_folder.url`, and the
    output and error files land as blobs in that folder."""

    def __init__(self) -> None:
        super().__init__("azure")

    def create(self, rt: Runtime, body: dict[str, Any]) -> BatchRecord:
        blob = body.get("input_blob")
        if body.get("input_file_id") or body.get("requests") or not blob:
            return super().create(rt, body)
        endpoint, window, metadata = self._check_create(body)
        folder = body.get("output_folder")
        folder_url = folder.get("url") if isinstance(folder, dict) else None
        if not isinstance(folder_url, str) or not folder_url:
            raise _invalid("output_folder is required when input_blob is given.", "output_folder")
        for url, param in ((blob, "input_blob"), (folder_url, "output_folder")):
            try:
                objects.split_uri(str(url))
            except objects.ObjectUriError:
                raise _invalid(f"Invalid blob URL for '{param}': {url}", param) from None
        if objects.get_object(rt.store, str(blob)) is None:
            raise _invalid(
                f"The input blob {blob} does not exist or is not readable.", "input_blob"
            )
        native = {"input_blob": blob, "output_folder": folder_url}
        return self._new_batch(rt, body, endpoint, window, metadata, None, native)

    def input_path(self, rt: Runtime, batch: BatchRecord) -> Path:
        blob = batch.native.get("input_blob")
        return rt.store.file_data(str(blob)) if blob else super().input_path(rt, batch)

    def view(self, batch: BatchRecord) -> dict[str, Any]:
        blobs = {key: batch.native.get(key) for key in ("input_blob", "output_blob", "error_blob")}
        return drop_none({**super().view(batch), **blobs})

    def create_view(self, batch: BatchRecord) -> dict[str, Any]:
        return drop_none(
            {**super().create_view(batch), "input_blob": batch.native.get("input_blob")}
        )

    def results(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """The output file if any, else the output blob (https on a blob host only)."""
        if batch.output_file_id:
            return super().results(rt, batch)
        blob = batch.native.get("output_blob")
        if not blob:
            raise ApiError(None, NO_OUTPUT, bifrost=True)
        return read_output(rt.store.file_data(str(blob)), batch.id)

    def publish(self, rt: Runtime, batch: BatchRecord) -> None:
        folder = batch.native.get("output_folder")
        if not folder:
            super().publish(rt, batch)
            return
        malformed = rt.faults.take("malformed_output")
        for suffix, kind in (("out.part", "output"), ("err.part", "error")):
            part = rt.store.batch_path(batch.id, suffix)
            if not part.exists() or part.stat().st_size == 0:
                part.unlink(missing_ok=True)
                continue
            if kind == "output" and malformed is not None:
                corrupt_lines(part, malformed.lines)
                rt.counters.fault_fired("malformed_output")
            uri = objects.join(str(folder), batch.id, f"{kind}.jsonl")
            objects.put_object(rt.store, uri, part, purpose="batch_output")
            batch.native[f"{kind}_blob"] = uri
