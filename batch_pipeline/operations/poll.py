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
from batch_pipeline.ledger.manifest import Manifest, ManifestStore
from batch_pipeline.ledger.storage import StorageError
from batch_pipeline.operations.submit import status_fields

# Some providers answer 404 for a short while right after create (an Anthropic quirk).
NOT_FOUND_GRACE_SECONDS = 300.0
GONE_STATUS = "not_found"
# Batches asked for at once; between chunks the sweep checks its deadline.
POLL_CHUNK = 64
# How long a tick waits for one manifest's lock (on S3 a dead pod's lease lasts ~70 s).
MANIFEST_WAIT_SECONDS = 5.0


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
    # after the poll: files with shards held back by queue limits, and every unsettled manifest
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
    deadline_seconds: float | None = None,
    now: float | None = None,
) -> PollReport:
    """Retrieve up to `max_batches` in-flight batches from `offset` on; persist what changed.

    Batches are asked for in chunks; none is started past `deadline_seconds`, so a slow gateway
    shortens the sweep (the next one starts where this one stopped) instead of stretching it.
    """
    started = time.monotonic()
    manifests = {m.input_file: m for m in store.active()}  # read once; updates replace entries
    refs = in_flight_batches(list(manifests.values()))
    report = PollReport(in_flight=len(refs), manifests=manifests)
    if refs:
        start = offset % len(refs)
        window = (refs[start:] + refs[:start])[:max_batches]
        answers: dict[str, object] = {}
        for begin in range(0, len(window), POLL_CHUNK):
            if deadline_seconds is not None and time.monotonic() - started > deadline_seconds:
                break
            chunk = window[begin : begin + POLL_CHUNK]
            got = client.retrieve_batches([(r.batch_id, r.provider) for r in chunk])
            answers.update(got)
            report.polled += len(chunk)
            if all(isinstance(a, GatewayError) and a.retryable for a in got.values()):
                # the gateway is down or overloaded: asking for more now only waits longer
                report.problems.append(f"gateway unavailable; sweep stopped after {report.polled}")
                break
        report.next_offset = (start + report.polled) % len(refs)
        _record_answers(store, window[: report.polled], answers, report, now or time.time())
    for name, manifest in report.manifests.items():
        if manifest.all_terminal:
            report.ready.append(name)
        if manifest.waiting:
            report.waiting.append(name)
        report.finished_batches += sum(1 for s in manifest.shards.values() if s.terminal)
    return report


def _record_answers(
    store: ManifestStore, refs: list[BatchRef], answers: dict, report: PollReport, now: float
) -> None:
    """Write each batch's new status to its manifest, one locked update per input file (a file
    whose lock stays taken for MANIFEST_WAIT_SECONDS is left for the next tick).

    A 404 marks a batch gone only when it persists for NOT_FOUND_GRACE_SECONDS (and not in the
    first minutes after create); when every batch of a provider answers 404 at once, the setup
    (gateway URL, virtual key) is suspect, not the batches, and nothing is marked.
    """
    by_provider: dict[str, list[bool]] = defaultdict(list)
    for ref in refs:
        by_provider[ref.provider].append(isinstance(answers.get(ref.batch_id), NotFoundError))
    setup_fault = {p for p, missing in by_provider.items() if len(missing) > 1 and all(missing)}
    for provider in setup_fault:
        report.problems.append(
            f"every {provider} batch polled answers 404: check the gateway URL and key; "
            "no batch is marked gone"
        )
    by_name: dict[str, list[BatchRef]] = defaultdict(list)
    for ref in refs:
        by_name[ref.name].append(ref)
    for name, name_refs in by_name.items():
        try:
            _record_file(store, name, name_refs, answers, setup_fault, report, now)
        except StorageError as exc:  # its lock is held (a dead pod's lease): next tick
            report.problems.append(f"{name}: statuses not recorded this time: {exc}")


def _record_file(
    store: ManifestStore,
    name: str,
    refs: list[BatchRef],
    answers: dict,
    setup_fault: set[str],
    report: PollReport,
    now: float,
) -> None:
    with store.update(name, timeout=MANIFEST_WAIT_SECONDS) as manifest:
        for ref in refs:
            record = manifest.shards[ref.shard_id]
            answer = answers.get(ref.batch_id)
            if isinstance(answer, NotFoundError):
                if (
                    ref.provider in setup_fault
                    or now - (ref.created_at or now) < NOT_FOUND_GRACE_SECONDS
                ):
                    continue
                if record.not_found_since is None:
                    record.not_found_since = now
                if now - record.not_found_since < NOT_FOUND_GRACE_SECONDS:
                    report.problems.append(f"{name}: batch {ref.batch_id} answers 404: {answer}")
                    continue
                # Gone for good: collect accounts its requests as `missing`.
                report.problems.append(f"{name}: batch {ref.batch_id} is gone: {answer}")
                record.status, record.terminal = GONE_STATUS, True
            elif isinstance(answer, GatewayError) or answer is None:
                report.problems.append(f"{name}: batch {ref.batch_id}: {answer}")
            else:
                view = BatchView.of(answer, ref.provider)  # type: ignore[arg-type]
                before = (record.status, record.request_counts)
                for key, value in status_fields(view).items():
                    setattr(record, key, value)
                record.not_found_since = None
                if (record.status, record.request_counts) != before:
                    report.updated[name].append(view)
    report.manifests[name] = manifest  # as saved: the tick's verdicts read this one
