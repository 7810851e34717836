"""Taking an inbox file for a partition, inside `batch_input` (runs write, sensors read).

The partition's input is registered once as an immutable, content-addressed copy that every
later step reads. New content under a used name is refused here in one line: the inbox file is
moved to `inbox/rejected/` with a reason beside it, and the refusal is recorded as an
observation on the inbox asset, so the UI shows it next to the run that failed; the original
stays registered. Content already registered under another name is refused unless resubmitting.
"""

from __future__ import annotations

import dagster as dg

from batch_pipeline.integration.names import PipelineNames
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.ledger.layout import DataLayout, LayoutError
from batch_pipeline.ledger.registry import (
    InputRecord,
    InputRefused,
    InputRegistry,
    version_of,
)

REJECTED_STATUS = "rejected"


def register_input(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    names: PipelineNames,
    layout: DataLayout,
    name: str,
    *,
    resubmit: bool,
) -> InputRecord:
    """The registered input of partition `name`: registered now from its inbox file, or, once
    registered, the record, after refusing new content left under its name (dg.Failure)."""
    registry = InputRegistry(layout)
    record = registry.record(name)
    if record is None:
        return _register_new(registry, layout, name, resubmit=resubmit)
    if settings.inputs.on_name_reuse == "refuse":
        now = registry.new_content(record)
        if now is not None:
            reason = (
                f"{record.file}: new content under the used name {name!r}; the original is kept "
                f"in {registry.relative(registry.copy_path(record))} and stays the input of "
                f"{name!r}; the new file was moved to inbox/rejected/{record.file} (reason in "
                f"{record.file}.reason.txt); put it under a new file name"
            )
            registry.reject(record.file, reason)
            context.log_event(
                dg.AssetObservation(
                    names.inbox,
                    partition=name,
                    metadata={
                        "status": REJECTED_STATUS,
                        "reason": reason,
                        "rejected_sha256": now.sha256,
                        "original_file": record.file,
                    },
                )
            )
            raise dg.Failure(description=reason, allow_retries=False)
    return record


def _register_new(
    registry: InputRegistry, layout: DataLayout, name: str, *, resubmit: bool
) -> InputRecord:
    base, version = version_of(name)
    try:
        source = layout.input_file(name)
        version, previous = 1, None
    except LayoutError:
        if version == 1:
            raise
        source = layout.input_file(base)  # the next version of a name, from its inbox file
        previous = base if version == 2 else f"{base}.v{version - 1}"
    try:
        return registry.register(
            name, source, allow_duplicate=resubmit, version=version, previous=previous
        )
    except InputRefused as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def as_dropped(layout: DataLayout, record: InputRecord | None, message: str) -> str:
    """A problem found in a registered copy, naming the inbox file the user dropped instead
    (the copy holds the same bytes, so its lines are the file's lines)."""
    if record is None:
        return message
    copy = InputRegistry(layout).copy_path(record)
    return message.replace(str(copy), str(layout.inbox / record.file))


def record_metadata(registry: InputRegistry, record: InputRecord) -> dict[str, dg.RawMetadataValue]:
    """What the UI shows of a registered input: the name it came under, its copy, lineage."""
    metadata: dict[str, dg.RawMetadataValue] = {
        "original_file": record.file,
        "input_copy": dg.MetadataValue.path(registry.relative(registry.copy_path(record))),
        "input_bytes": record.size,
        "input_file_sha256": record.sha256,
        "version": record.version,
    }
    if record.previous is not None:
        metadata["previous_version"] = record.previous
    return metadata
