"""Batch status: polled read-only by the status sensor, recorded by runs.

`poll_batches` is what a sensor tick does: retrieve at most `max_batches` in-flight batches,
starting where the previous tick stopped, concurrently, and return what they say; it writes
nothing. What a tick learns is overlaid on the manifests in memory (`with_states`) to judge
readiness and progress. Runs that act on a status (collect, submit weighing queue limits) first
call `refresh_statuses`, which retrieves and writes it into the manifest under its lock.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batch_pipeline.gateway import (
    BatchView,
    BifrostClient,
    GatewayError,
    NotFoundError,
    normalize_status,
)
from batch_pipeline.ledger.manifest import Manifest, ManifestStore, ShardRecord

# Some providers answer 404 for a short while right after create (an Anthropic quirk).
NOT_FOUND_GRACE_SECONDS = 300.0
GONE_STATUS = "not_found"
# Batches asked for at once; between chunks the sweep checks its deadline.
POLL_CHUNK = 64


@dataclass(frozen=True)
class BatchRef:
    """An in-flight batch and where it belongs."""

    name: str
    shard_id: str
    batch_id: str
    provider: str
    created_at: float | None


@dataclass(frozen=True)
class BatchState:
    """What a poll learned of one batch: enough to judge readiness and show progress."""

    status: str
    terminal: bool
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, view: BatchView) -> BatchState:
        return cls(view.status, view.terminal, view.counts.model_dump())

    @classmethod
    def gone(cls) -> BatchState:
        return cls(GONE_STATUS, True)

    def to_json(self) -> list[Any]:
        """A compact form for a sensor cursor."""
        return [self.status, self.terminal, self.counts]

    @classmethod
    def from_json(cls, data: list[Any]) -> BatchState:
        status, terminal, counts = data
        return cls(str(status), bool(terminal), dict(counts))


@dataclass
class PollReport:
    """One sweep: the states it learned and the 404s it is still waiting out."""

    in_flight: int = 0
    polled: int = 0
    next_offset: int = 0
    states: dict[str, BatchState] = field(default_factory=dict)  # by batch id
    missing_since: dict[str, float] = field(default_factory=dict)  # batch id -> first 404
    problems: list[str] = field(default_factory=list)


def in_flight_batches(
    manifests: Iterable[Manifest], known: Mapping[str, BatchState] | None = None
) -> list[BatchRef]:
    """Submitted batches not known to have ended (by their manifest or an earlier poll), in a
    stable order."""
    known = known or {}
    refs = []
    for manifest in manifests:
        for record in manifest.shards.values():
            batch_id = record.batch_id
            if batch_id is None or record.terminal:
                continue
            state = known.get(batch_id)
            if state is not None and state.terminal:
                continue
            refs.append(
                BatchRef(
                    manifest.input_file,
                    record.shard_id,
                    batch_id,
                    record.provider,
                    record.created_at,
                )
            )
    return refs


def poll_batches(
    client: BifrostClient,
    refs: list[BatchRef],
    *,
    max_batches: int = 500,
    offset: int = 0,
    deadline_seconds: float | None = None,
    missing_since: Mapping[str, float] | None = None,
    now: float | None = None,
) -> PollReport:
    """Retrieve up to `max_batches` of `refs` from `offset` on (round-robin); writes nothing.

    Batches are asked for in chunks; none is started past `deadline_seconds`, so a slow gateway
    shortens the sweep (the next one starts where this one stopped) instead of stretching it.
    `missing_since` carries the first 404 of each batch between sweeps (see `judge_answers`).
    """
    started = time.monotonic()
    report = PollReport(in_flight=len(refs))
    if not refs:
        return report
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
    polled = window[: report.polled]
    report.states, report.missing_since, problems = judge_answers(
        polled, answers, dict(missing_since or {}), now or time.time()
    )
    report.problems += problems
    return report


def judge_answers(
    refs: list[BatchRef], answers: Mapping[str, object], missing_since: dict[str, float], now: float
) -> tuple[dict[str, BatchState], dict[str, float], list[str]]:
    """The states the answers tell, the 404s still being waited out, and problems worth a line.

    A 404 marks a batch gone only when it persists for NOT_FOUND_GRACE_SECONDS (and not in the
    first minutes after create); when every batch of a provider answers 404 at once, the setup
    (gateway URL, virtual key) is suspect, not the batches, and nothing is marked.
    """
    states: dict[str, BatchState] = {}
    problems: list[str] = []
    by_provider: dict[str, list[bool]] = defaultdict(list)
    for ref in refs:
        by_provider[ref.provider].append(isinstance(answers.get(ref.batch_id), NotFoundError))
    setup_fault = {p for p, missing in by_provider.items() if len(missing) > 1 and all(missing)}
    for provider in sorted(setup_fault):
        problems.append(
            f"every {provider} batch polled answers 404: check the gateway URL and key; "
            "no batch is marked gone"
        )
    for ref in refs:
        answer = answers.get(ref.batch_id)
        if isinstance(answer, NotFoundError):
            if (
                ref.provider in setup_fault
                or now - (ref.created_at or now) < NOT_FOUND_GRACE_SECONDS
            ):
                continue
            first = missing_since.setdefault(ref.batch_id, now)
            if now - first < NOT_FOUND_GRACE_SECONDS:
                problems.append(f"{ref.name}: batch {ref.batch_id} answers 404: {answer}")
                continue
            # Gone for good: collect accounts its requests as `missing`.
            problems.append(f"{ref.name}: batch {ref.batch_id} is gone: {answer}")
            states[ref.batch_id] = BatchState.gone()
            missing_since.pop(ref.batch_id, None)
        elif isinstance(answer, GatewayError) or answer is None:
            problems.append(f"{ref.name}: batch {ref.batch_id}: {answer}")
        else:
            states[ref.batch_id] = BatchState.of(BatchView.of(answer, ref.provider))  # type: ignore[arg-type]
            missing_since.pop(ref.batch_id, None)
    return states, missing_since, problems


def with_states(manifest: Manifest, states: Mapping[str, BatchState]) -> Manifest:
    """A copy of `manifest` with what polls learned since it was written laid over its records;
    the manifest on storage is untouched."""
    shards = {}
    for shard_id, record in manifest.shards.items():
        state = states.get(record.batch_id) if record.batch_id and not record.terminal else None
        if state is not None:
            record = record.model_copy(
                update={
                    "status": state.status,
                    "terminal": state.terminal,
                    "request_counts": state.counts or record.request_counts,
                }
            )
        shards[shard_id] = record
    return manifest.model_copy(update={"shards": shards})


@dataclass(frozen=True)
class FileProgress:
    """Where one input file stands: its batches, their requests, and whether to collect now."""

    name: str
    shards: int
    batches: int
    finished: int
    waiting: int
    requests: int
    succeeded: int
    failed: int
    statuses: dict[str, int]

    @property
    def ready(self) -> bool:
        """Every shard's batch ended, or the shard was cancelled before it had one (a file with
        no valid request has no shard: it is ready at once)."""
        return self.finished == self.shards

    def digest(self) -> str:
        """Changes exactly when something worth reporting changed."""
        statuses = ",".join(f"{k}={v}" for k, v in sorted(self.statuses.items()))
        return f"{self.finished}/{self.shards}/{self.succeeded}/{self.failed}/{statuses}"


def file_progress(manifest: Manifest) -> FileProgress:
    """The progress of a (possibly overlaid) manifest."""
    records = list(manifest.shards.values())
    counts: Counter[str] = Counter()
    for record in records:
        for key, value in (record.request_counts or {}).items():
            counts[key] += value or 0
    return FileProgress(
        name=manifest.input_file,
        shards=len(records),
        batches=sum(1 for r in records if r.batch_id),
        finished=sum(1 for r in records if r.terminal),
        waiting=sum(1 for r in records if r.waiting and not r.batch_id),
        requests=sum(r.request_count for r in records),
        succeeded=counts["succeeded"],
        failed=counts["errored"] + counts["expired"] + counts["canceled"],
        statuses=dict(Counter(_shown_status(r) for r in records)),
    )


def _shown_status(record: ShardRecord) -> str:
    if record.batch_id is None:
        return "cancelled" if record.terminal else ("waiting" if record.waiting else "pending")
    return normalize_status(record.status) if record.status else "submitted"


def refresh_statuses(
    client: BifrostClient,
    store: ManifestStore,
    name: str,
    *,
    only: Callable[[ShardRecord], bool] | None = None,
    now: float | None = None,
) -> Manifest | None:
    """Retrieve input file `name`'s in-flight batches (those `only` selects) and write their
    status into its manifest; a run does this before it acts on a status. A batch that answers
    404 past the grace period is recorded as gone. Returns the manifest as saved."""
    manifest = store.load(name)
    if manifest is None:
        return None
    refs = [
        r
        for r in in_flight_batches([manifest])
        if only is None or only(manifest.shards[r.shard_id])
    ]
    if not refs:
        return manifest
    answers = client.retrieve_batches([(r.batch_id, r.provider) for r in refs])
    for answer in answers.values():
        if isinstance(answer, GatewayError) and not isinstance(answer, NotFoundError):
            raise answer
    now = now or time.time()
    with store.update(name) as current:
        for ref in refs:
            record = current.shards[ref.shard_id]
            answer = answers[ref.batch_id]
            if isinstance(answer, NotFoundError):
                if now - (ref.created_at or now) >= NOT_FOUND_GRACE_SECONDS:
                    record.status, record.terminal = GONE_STATUS, True
            else:
                view = BatchView.of(answer, ref.provider)  # type: ignore[arg-type]
                for key, value in status_fields(view).items():
                    setattr(record, key, value)
    return current


def status_fields(view: BatchView) -> dict[str, Any]:
    """The manifest fields that mirror a batch's latest status."""
    return {
        "status": view.status,
        "terminal": view.terminal,
        "request_counts": view.counts.model_dump() if view.counts else {},
        "output_file_id": view.output_file_id,
        "error_file_id": view.error_file_id,
        "output_blob": view.output_blob,
        "error_blob": view.error_blob,
        "expires_at": view.expires_at,
        "batch_errors": [e.model_dump(exclude_none=True) for e in view.errors],
        "polled_at": time.time(),
    }
