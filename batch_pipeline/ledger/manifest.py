"""The crash-safe record of what was submitted: one JSON file per input file.

The record of a shard is written *before* a batch create (state `creating`: the intent) and
right after it (state `submitted`, with the batch id), each time atomically and under a lock,
so a crash at any point leaves either no intent, an intent to reconcile, or the batch id:
never a second batch for the same shard.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

from pydantic import BaseModel, Field

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.ledger.layout import check_name
from batch_pipeline.ledger.storage import (
    DataPath,
    Hold,
    LockBusy,
    list_names,
    lock,
    read_versioned,
    write_versioned,
)

ShardState = Literal["pending", "creating", "submitted"]


class ManifestBusy(BatchPipelineError):
    """Another process holds the same work (`what`: submit, collect) on the same input file."""

    def __init__(self, name: str, what: str) -> None:
        self.name = name
        self.what = what
        super().__init__(f"{name}: another {what} of this file is running")


class ShardRecord(BaseModel):
    """One shard of an input file and, once created, its batch."""

    shard_id: str
    provider: str
    model: str
    endpoint: str
    request_count: int
    bytes: int
    state: ShardState = "pending"
    input_file_id: str | None = None
    input_blob: str | None = None  # Azure blob input: the blob the shard was put as
    intent_at: float | None = None
    batch_id: str | None = None
    created_at: float | None = None
    status: str | None = None
    terminal: bool = False
    request_counts: dict[str, int] = Field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    output_blob: str | None = None  # Azure blob input: where the batch wrote its output
    error_blob: str | None = None
    expires_at: float | None = None
    batch_errors: list[dict[str, Any]] = Field(default_factory=list)
    polled_at: float | None = None
    estimated_input_tokens: int = 0
    estimated_output_tokens: int = 0
    estimated_cost: float | None = None
    waiting: str | None = None  # why a pending shard is held back (queue limits)
    files_deleted: bool = False
    cancel_requested: bool = False  # asked while its create was in flight: cancel once known
    output_not_found: int = 0  # collects that met this ended batch's output answering 404

    @property
    def in_flight(self) -> bool:
        return self.batch_id is not None and not self.terminal


class Manifest(BaseModel):
    """Every shard of one input file, keyed by shard id, in plan order."""

    version: int = 1
    input_file: str
    input_sha256: str
    shards: dict[str, ShardRecord] = Field(default_factory=dict)
    updated_at: float | None = None

    @property
    def batch_ids(self) -> list[str]:
        return [s.batch_id for s in self.shards.values() if s.batch_id]

    @property
    def waiting(self) -> list[ShardRecord]:
        return [s for s in self.shards.values() if s.waiting and not s.batch_id]

    @property
    def all_terminal(self) -> bool:
        """Every shard's batch ended, or the shard was cancelled before it had one (a file with
        no valid request has no shard: it is ready at once)."""
        return all(s.terminal for s in self.shards.values())


class ManifestStore:
    """Reads and updates manifests in `data/batches/`; updates are locked and atomic."""

    def __init__(self, batches_dir: DataPath) -> None:
        self.dir = batches_dir

    def path(self, name: str) -> DataPath:
        return self.dir / f"{check_name(name)}.json"

    @contextmanager
    def exclusive(self, name: str, what: str) -> Iterator[Hold]:
        """Hold `what` (e.g. "submit") for one input file across processes, or refuse at once.
        Call `check()` on what it yields before an action that must not happen twice."""
        with ExitStack() as held:
            try:
                hold = held.enter_context(
                    lock(self.dir / f".{check_name(name)}.{what}.lock", blocking=False)
                )
            except LockBusy:
                raise ManifestBusy(name, what) from None
            yield hold

    def load(self, name: str) -> Manifest | None:
        data, _ = read_versioned(self.path(name))
        return None if data is None else Manifest.model_validate_json(data)

    def names(self) -> list[str]:
        """Names of every input file that has a manifest."""
        return [
            file_name.removesuffix(".json")
            for file_name, _ in list_names(self.dir)
            if file_name.endswith(".json") and not file_name.startswith(".")
        ]

    @contextmanager
    def update(
        self, name: str, *, input_sha256: str | None = None, timeout: float | None = None
    ) -> Iterator[Manifest]:
        """Lock, load (or start) the manifest, let the caller change it, save it atomically.

        On S3 the save is also conditional on the version loaded, so a writer whose lease was
        lost meanwhile fails (LockLost) instead of overwriting. `timeout`: give up waiting for
        the lock after that many seconds (S3 only; StorageError).
        """
        with lock(self.dir / f".{check_name(name)}.lock", timeout=timeout):
            data, version = read_versioned(self.path(name))
            if data is not None:
                manifest = Manifest.model_validate_json(data)
            elif input_sha256 is not None:
                manifest = Manifest(input_file=name, input_sha256=input_sha256)
            else:
                raise FileNotFoundError(f"{self.path(name)}: no manifest")
            yield manifest
            manifest.updated_at = time.time()
            write_versioned(self.path(name), manifest.model_dump_json(indent=1).encode(), version)

    def record(self, name: str, shard_id: str, **changes: Any) -> ShardRecord:
        """Apply `changes` to one shard's record and persist them before returning."""
        with self.update(name) as manifest:
            record = manifest.shards[shard_id]
            for key, value in changes.items():
                setattr(record, key, value)
            return record.model_copy()
