"""Polling in-flight batches with bounded work per call, round-robin across calls.

A sensor tick calls `poll_in_flight` once: it reads every manifest (small JSON files), picks at
most `max_batches` in-flight batches starting where the previous tick stopped, retrieves them
concurrently, and writes their status back to the manifests.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from batch_pipeline.gateway import BatchView, BifrostClient, GatewayError, NotFoundError
from batch_pipeline.manifest import Manifest, ManifestStore
from batch_pipeline.submit import status_fields

# Some providers answer 404 for a short while right after create (an Anthropic quirk).
NOT_FOUND_GRACE_SECONDS = 300.0
GONE_STATUS = "not_found"


@dataclass(frozen=True)
class BatchRef:
    name: str
    shard_id: str
    batch_id: str
    provider: str
    created_at: float | None


@dataclass
class PollReport:
    """What one poll did: which batches changed, which files are ready to collect."""

    in_flight: int = 0
    polled: int = 0
    next_offset: int = 0
    # batches whose status or counts changed since the previous poll, by input file
    updated: dict[str, list[BatchView]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)
    # after the poll: files with shards held back by queue limits, and every manifest
    waiting: list[str] = field(default_factory=list)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    finished_batches: int = 0


def in_flight_batches(manifests: list[Manifest]) -> list[BatchRef]:
    """Every submitted, non-terminal batch across the manifests, in a stable order."""
    refs = []
    for manifest in manifests:
        name = manifest.input_file
        for record in manifest.shards.values():
            if record.in_flight:
                refs.append(
                    BatchRef(
                        name, record.shard_id, record.batch_id, record.provider, record.created_at
                    )  # type: ignore[arg-type]
                )
    return refs


def poll_in_flight(
    client: BifrostClient,
    store: ManifestStore,
    *,
    max_batches: int = 500,
    offset: int = 0,
    now: float | None = None,
) -> PollReport:
    """Retrieve up to `max_batches` in-flight batches from `offset` on; persist what changed."""
    refs = in_flight_batches(store.all())
    report = PollReport(in_flight=len(refs))
    if refs:
        start = offset % len(refs)
        window = (refs[start:] + refs[:start])[:max_batches]
        report.next_offset = (start + len(window)) % len(refs)
        answers = client.retrieve_batches([(r.batch_id, r.provider) for r in window])
        now = time.time() if now is None else now
        by_name: dict[str, dict[str, BatchView]] = defaultdict(dict)
        lost: dict[str, list[str]] = defaultdict(list)
        for ref in window:
            answer = answers.get(ref.batch_id)
            if isinstance(answer, NotFoundError):
                if now - (ref.created_at or now) < NOT_FOUND_GRACE_SECONDS:
                    continue
                report.problems.append(f"{ref.name}: batch {ref.batch_id} is gone: {answer}")
                lost[ref.name].append(ref.shard_id)
                continue
            if isinstance(answer, GatewayError) or answer is None:
                report.problems.append(f"{ref.name}: batch {ref.batch_id}: {answer}")
                continue
            by_name[ref.name][ref.shard_id] = BatchView.of(answer, ref.provider)
        report.polled = len(window)
        for name in by_name.keys() | lost.keys():
            with store.update(name) as manifest:
                for shard_id, view in by_name[name].items():
                    record = manifest.shards[shard_id]
                    before = (record.status, record.request_counts)
                    for key, value in status_fields(view).items():
                        setattr(record, key, value)
                    if (record.status, record.request_counts) != before:
                        report.updated[name].append(view)
                for shard_id in lost[name]:
                    # The gateway no longer knows the batch: collect accounts its requests as missing.
                    manifest.shards[shard_id].status = GONE_STATUS
                    manifest.shards[shard_id].terminal = True
    report.manifests = {m.input_file: m for m in store.all()}
    for name, manifest in report.manifests.items():
        if manifest.all_terminal:
            report.ready.append(name)
        if manifest.waiting:
            report.waiting.append(name)
        report.finished_batches += sum(1 for s in manifest.shards.values() if s.terminal)
    return report
