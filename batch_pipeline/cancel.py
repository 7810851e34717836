"""Cancelling an input file: every in-flight batch is cancelled, shards not yet submitted never
will be. What finished is kept; collect turns the rest into `canceled` error rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from batch_pipeline.gateway import BatchView, BifrostClient, GatewayStatusError
from batch_pipeline.manifest import ManifestStore
from batch_pipeline.submit import status_fields

CANCELLED = "cancelled"


@dataclass
class CancelReport:
    cancelled: list[str] = field(default_factory=list)  # batch ids asked to cancel
    already_finished: list[str] = field(default_factory=list)
    never_submitted: list[str] = field(default_factory=list)  # shard ids


def cancel_partition(client: BifrostClient, store: ManifestStore, name: str) -> CancelReport:
    """Cancel what is still running of input file `name` and record it in its manifest."""
    manifest = store.load(name)
    if manifest is None:
        raise FileNotFoundError(f"{name}: nothing was submitted, so there is nothing to cancel")
    report = CancelReport()
    for record in manifest.shards.values():
        if record.batch_id is None:
            if record.state == "creating":
                # an unknown create may still surface; leave it for submit to reconcile
                continue
            store.record(name, record.shard_id, status=CANCELLED, terminal=True, waiting=None)
            report.never_submitted.append(record.shard_id)
        elif record.terminal:
            report.already_finished.append(record.batch_id)
        else:
            try:
                answer = client.cancel_batch(record.batch_id, provider=record.provider)
            except GatewayStatusError as exc:
                if exc.status_code not in (400, 409):
                    raise
                # it finished meanwhile: the next poll records how
                report.already_finished.append(record.batch_id)
                continue
            store.record(
                name, record.shard_id, **status_fields(BatchView.of(answer, record.provider))
            )
            report.cancelled.append(record.batch_id)
    return report
