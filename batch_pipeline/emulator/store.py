"""Files and batches persisted under the state directory, so a restart loses nothing.

Layout: `files/<id>.json` (metadata) + `files/<id>.data` (content); `batches/<id>.json` (record),
`batches/<id>.input.jsonl` (inline requests), `batches/<id>.out.part` / `.err.part` (output being
written; truncated back to the recorded size on restart, so no line is written twice).
Records live in memory behind one lock; every change is written atomically (temp file + rename).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field


class FileRecord(BaseModel):
    """One uploaded or generated file."""

    id: str
    provider: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    created_ts: float = 0.0
    deleted: bool = False
    content_type: str | None = None


class BatchRecord(BaseModel):
    """One batch and its processing progress (enough to resume after a restart)."""

    id: str
    provider: str
    endpoint: str | None = None
    model: str | None = None
    input_file_id: str | None = None
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    created_ts: float
    deadline_ts: float
    expires_ts: float | None = None
    hidden_until: float = 0.0
    status: str
    times: dict[str, float] = Field(default_factory=dict)
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    canceled: int = 0
    processed: int = 0
    input_offset: int = 0
    out_bytes: int = 0
    err_bytes: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    expire_requested: bool = False
    native: dict[str, Any] = Field(default_factory=dict)

    @property
    def pending(self) -> int:
        """Requests neither answered nor given up on yet."""
        return max(self.total - self.processed, 0)

    def stamp(self, name: str, now: float) -> None:
        """Record when the batch entered a state (first time only)."""
        self.times.setdefault(name, now)


def safe_name(ident: str) -> str:
    """A file-system-safe name for an id that may contain '/' (e.g. Gemini `batches/...`)."""
    if ident.replace("-", "").replace("_", "").isalnum():
        return ident
    return base64.urlsafe_b64encode(ident.encode()).decode().rstrip("=")


def new_id(prefix: str, size: int = 24) -> str:
    """A random id with the provider's prefix, e.g. `batch_…`, `file-…`."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(size))


def derived_id(prefix: str, seed: str, size: int = 24) -> str:
    """An id derived from a seed, so a repeated step (after a crash) reuses the same id."""
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:size]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so readers (and a restart) never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


class Store:
    """The emulator's files and batches, in memory and on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.batches_dir = root / "batches"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.files: dict[str, FileRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        self._load()

    def _load(self) -> None:
        for path in self.files_dir.glob("*.json"):
            record = FileRecord.model_validate_json(path.read_bytes())
            self.files[record.id] = record
        for path in self.batches_dir.glob("*.json"):
            batch = BatchRecord.model_validate_json(path.read_bytes())
            self.batches[batch.id] = batch

    def file_data(self, file_id: str) -> Path:
        """Where a file's content lives."""
        return self.files_dir / f"{safe_name(file_id)}.data"

    def batch_path(self, batch_id: str, suffix: str) -> Path:
        """A batch's side file: `input.jsonl`, `out.part`, `err.part`, `results.jsonl`."""
        return self.batches_dir / f"{safe_name(batch_id)}.{suffix}"

    def save_file(self, record: FileRecord) -> None:
        """Persist file metadata and make it visible."""
        with self.lock:
            write_json_atomic(self.files_dir / f"{safe_name(record.id)}.json", record.model_dump())
            self.files[record.id] = record

    def save_batch(self, batch: BatchRecord, *, new: bool = False) -> None:
        """Persist a batch record; updates of a batch forgotten by a reset are dropped."""
        with self.lock:
            if not new and batch.id not in self.batches:
                return
            write_json_atomic(self.batches_dir / f"{safe_name(batch.id)}.json", batch.model_dump())
            self.batches[batch.id] = batch

    def files_under(self, prefix: str) -> list[FileRecord]:
        """Live files whose id starts with `prefix` (objects of a simulated bucket), by id."""
        with self.lock:
            found = [f for f in self.files.values() if f.id.startswith(prefix) and not f.deleted]
        return sorted(found, key=lambda f: f.id)

    def live_file(self, file_id: str, provider: str) -> FileRecord | None:
        """The file when it exists for this provider and is not deleted."""
        with self.lock:
            record = self.files.get(file_id)
        if record is None or record.deleted or record.provider != provider:
            return None
        return record

    def batch(self, batch_id: str, provider: str) -> BatchRecord | None:
        """The batch when it exists for this provider."""
        with self.lock:
            batch = self.batches.get(batch_id)
        if batch is None or batch.provider != provider:
            return None
        return batch

    def provider_batches(self, provider: str) -> list[BatchRecord]:
        """A provider's batches, newest first."""
        with self.lock:
            found = [b for b in self.batches.values() if b.provider == provider]
        return sorted(found, key=lambda b: (b.created_ts, b.id), reverse=True)

    def provider_files(self, provider: str) -> list[FileRecord]:
        """A provider's live files, newest first."""
        with self.lock:
            found = [f for f in self.files.values() if f.provider == provider and not f.deleted]
        return sorted(found, key=lambda f: (f.created_ts, f.id), reverse=True)

    def register_file(
        self,
        file_id: str,
        provider: str,
        filename: str,
        purpose: str,
        content_type: str | None = None,
    ) -> FileRecord:
        """Record a file whose content is already at `file_data(file_id)`."""
        size = self.file_data(file_id).stat().st_size
        now = time.time()
        record = FileRecord(
            id=file_id,
            provider=provider,
            filename=filename,
            purpose=purpose,
            bytes=size,
            created_at=int(now),
            created_ts=now,
            content_type=content_type,
        )
        self.save_file(record)
        return record

    def referenced_by_active_batch(self, file_id: str) -> bool:
        """True when an unfinished batch still reads this file."""
        terminal = {"completed", "failed", "expired", "cancelled", "ended"}
        with self.lock:
            return any(
                b.input_file_id == file_id and b.status not in terminal
                for b in self.batches.values()
            )

    def delete_file(self, record: FileRecord) -> None:
        """Mark a file deleted; drop its content unless a running batch still reads it."""
        record.deleted = True
        self.save_file(record)
        if not self.referenced_by_active_batch(record.id):
            self.file_data(record.id).unlink(missing_ok=True)

    def forget_batch(self, batch_id: str) -> None:
        """Delete a batch and its side files (Gemini's batches.delete)."""
        with self.lock:
            self.batches.pop(batch_id, None)
            for path in self.batches_dir.glob(f"{safe_name(batch_id)}.*"):
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every file and batch (admin reset)."""
        with self.lock:
            for directory in (self.files_dir, self.batches_dir):
                for path in directory.iterdir():
                    path.unlink(missing_ok=True)
            self.files.clear()
            self.batches.clear()
