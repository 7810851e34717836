"""Cancelling an input file: every in-flight batch is cancelled, shards not yet submitted never
will be. What finished is kept; collect turns the rest into `canceled` error rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.gateway import BifrostClient
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.submit import cancel_and_record

CANCELLED = "cancelled"


class CancelError(BatchPipelineError):
    """There is nothing to cancel; the message says why."""


@dataclass
class CancelReport:
    cancelled: list[str] = field(default_factory=list)  # batch ids asked to cancel
    already_finished: list[str] = field(default_factory=list)
    never_submitted: list[str] = field(default_factory=list)  # shard ids


def cancel_partition(client: BifrostClient, store: ManifestStore, name: str) -> CancelReport:
    """Cancel what is still running of input file `name` and record it in its manifest."""
    if store.load(name) is None:
        raise CancelError(f"{name}: nothing was submitted, so there is nothing to cancel")
    report = CancelReport()
    with store.update(name) as current:
        # under the lock, so a submit cannot create what is being cancelled: it checks first
        for record in current.shards.values():
            if record.batch_id is None and record.state == "creating":
                record.cancel_requested = True  # its create may have made a batch: cancel that
            elif record.batch_id is None and not record.terminal:
                record.status, record.terminal, record.waiting = CANCELLED, True, None
                report.never_submitted.append(record.shard_id)
    for record in current.shards.values():
        if record.batch_id is None:
            continue
        if record.terminal or not cancel_and_record(client, store, name, record):
            report.already_finished.append(record.batch_id)
        else:
            report.cancelled.append(record.batch_id)
    return report
