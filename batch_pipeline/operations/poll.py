"""Batch status: polled read-only by the status sensor, recorded by runs.

`poll_batches` is what a sensor tick does: retrieve at most `max_batches` in-flight batches,
starting where the previous tick stopped, concurrently, until a deadline, and return what they
say; it writes nothing. What a tick learns is overlaid on the manifests in memory
(`with_states`) to judge readiness and progress. Runs that act on a status (collect, submit weighing queue limits) first
call `refresh_statuses`, which retrieves and writes it into the manifest under its lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batch_pipeline.gateway import (
    BatchView,
    BifrostClient,
    GatewayError,
    GatewayTransportError,
    NotFoundError,
    normalize_status,
)
from batch_pipeline.ledger.manifest import Manifest, ManifestStore, ShardRecord

# Some providers answer 404 for a short while right after create (an Anthropic quirk).
NOT_FOUND_GRACE_SECONDS = 300.0
GONE_STATUS = "not_found"
# Status calls out at once in a sweep (the client's connection pool holds 64).
POLL_WORKERS = 64


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
    """One sweep: the states it learned, the 404s it is still waiting out, and the batches it
    asked for but got no answer about (to be asked for first next time)."""

    in_flight: int = 0
    polled: int = 0
    next_offset: int = 0
    unanswered: list[str] = field(default_factory=list)
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
    first: Iterable[str] = (),
    deadline: float | None = None,
    missing_since: Mapping[str, float] | None = None,
    now: float | None = None,
    workers: int = POLL_WORKERS,
) -> PollReport:
    """Retrieve up to `max_batches` of `refs`: the batch ids in `first` (left without an answer
    by the previous sweep), then round-robin from `offset`; writes nothing.

    With a `deadline` (time.monotonic()) the sweep returns by then whatever the gateway's
    latency: each call's timeouts are cut to the time left, no call starts after it, and calls
    still out are abandoned (their ids come back in `unanswered`, to go `first` next time).
    `next_offset` is past every batch asked for. `missing_since` carries the first 404 of each
    batch between sweeps (see `judge_answers`).
    """
    report = PollReport(in_flight=len(refs))
    if not refs:
        return report
    start = offset % len(refs)
    ahead = set(first)
    carried = [r for r in refs if r.batch_id in ahead]
    order = [(i % len(refs), refs[i % len(refs)]) for i in range(start, start + len(refs))]
    rotation = [(i, r) for i, r in order if r.batch_id not in ahead]
    window = (carried + [r for _, r in rotation])[:max_batches]
    sweep = _Sweep(client, window, deadline)
    taken, answers, failures = sweep.run(workers)
    rotated = taken - len(carried)
    report.next_offset = (rotation[rotated - 1][0] + 1) % len(refs) if rotated > 0 else start
    asked = window[:taken]
    answered = [
        r
        for r in asked
        if r.batch_id in answers and not isinstance(answers[r.batch_id], GatewayTransportError)
    ]
    report.polled = len(answered)
    got = {r.batch_id for r in answered}
    report.unanswered = [r.batch_id for r in asked if r.batch_id not in got]
    report.states, report.missing_since, problems = judge_answers(
        answered, answers, dict(missing_since or {}), now or time.time()
    )
    if sweep.unreachable is not None:
        report.problems.append(
            f"gateway unavailable ({sweep.unreachable}); sweep stopped after {taken} call(s)"
        )
    elif report.unanswered:
        report.problems.append(
            f"{len(report.unanswered)} status call(s) without an answer by the tick's deadline "
            "were abandoned; they are asked for first next tick"
        )
    report.problems += failures + problems
    return report


class _Sweep:
    """Status calls over a fixed window on worker threads that take the next batch in order;
    `run` returns at the deadline, leaving calls still out to finish (or time out) on their own
    daemon threads. Once a call gets no answer at all, no further call is started."""

    def __init__(
        self, client: BifrostClient, window: list[BatchRef], deadline: float | None
    ) -> None:
        self._client, self._window, self._deadline = client, window, deadline
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._next = 0
        self._running = 0
        self._stopped = False
        self._answers: dict[str, object] = {}
        self._failures: list[str] = []
        self.unreachable: str | None = None

    def run(self, workers: int) -> tuple[int, dict[str, object], list[str]]:
        """How many batches were asked for, the answers in by the deadline, and unexpected
        failures worth a line."""
        count = max(1, min(workers, len(self._window)))
        self._running = count
        for _ in range(count):
            threading.Thread(target=self._work, name="status-poll", daemon=True).start()
        left = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        self._done.wait(left)
        with self._lock:
            self._stopped = True  # a worker still out starts nothing more
            return self._next, dict(self._answers), list(self._failures)

    def _late(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _take(self) -> BatchRef | None:
        with self._lock:
            if self._stopped or self._late() or self._next >= len(self._window):
                return None
            self._next += 1
            return self._window[self._next - 1]

    def _work(self) -> None:
        try:
            while (ref := self._take()) is not None:
                answer: object
                try:
                    answer = self._client.retrieve_batch(
                        ref.batch_id, provider=ref.provider, deadline=self._deadline
                    )
                except GatewayTransportError as error:
                    answer = error
                    if not self._late():  # no answer in time: more calls now only wait longer
                        with self._lock:
                            self._stopped = True
                            self.unreachable = self.unreachable or type(error).__name__
                except GatewayError as error:
                    answer = error
                except Exception as error:  # e.g. a client closed under an abandoned call
                    # reported, never raised on a thread nobody joins
                    with self._lock:
                        self._failures.append(
                            f"batch {ref.batch_id}: status call failed: {type(error).__name__}"
                        )
                    continue
                with self._lock:
                    self._answers[ref.batch_id] = answer
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._done.set()


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
