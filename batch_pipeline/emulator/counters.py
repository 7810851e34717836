"""What the emulator has seen, so tests can prove a pipeline never submitted a batch twice."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import orjson

from batch_pipeline.emulator.store import write_json_atomic


def fingerprint_requests(requests: list[Any]) -> str:
    """Content fingerprint of an inline `requests` array (key order does not matter)."""
    canonical = orjson.dumps(requests, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def _empty() -> dict[str, Any]:
    return {
        "batches_created": 0,
        "batches_by_provider": {},
        "batches_by_metadata": {},
        "batches_by_fingerprint": {},
        "files_uploaded": 0,
        "files_by_provider": {},
        "requests_by_route": {},
        "faults_fired": {},
    }


def _bump(table: dict[str, int], key: str) -> None:
    table[key] = table.get(key, 0) + 1


class Counters:
    """Thread-safe counters, flushed to `counters.json` so they survive a restart."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._data = orjson.loads(path.read_bytes()) if path.exists() else _empty()
        self._dirty = False

    def batch_created(
        self, provider: str, metadata: dict[str, str] | None, fingerprint: str | None
    ) -> None:
        """Count one created batch by provider, by each metadata pair and by content."""
        with self._lock:
            self._data["batches_created"] += 1
            _bump(self._data["batches_by_provider"], provider)
            for key, value in (metadata or {}).items():
                _bump(self._data["batches_by_metadata"].setdefault(key, {}), value)
            if fingerprint:
                _bump(self._data["batches_by_fingerprint"], fingerprint)
            self._dirty = True

    def file_uploaded(self, provider: str) -> None:
        """Count one uploaded file."""
        with self._lock:
            self._data["files_uploaded"] += 1
            _bump(self._data["files_by_provider"], provider)
            self._dirty = True

    def request(self, route: str) -> None:
        """Count one request to a route (Bifrost request type)."""
        with self._lock:
            _bump(self._data["requests_by_route"], route)
            self._dirty = True

    def fault_fired(self, kind: str) -> None:
        """Count one injected fault."""
        with self._lock:
            _bump(self._data["faults_fired"], kind)
            self._dirty = True

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of every counter."""
        with self._lock:
            return orjson.loads(orjson.dumps(self._data))

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._data = _empty()
            self._dirty = True
        self.flush()

    def flush(self) -> None:
        """Persist the counters when they changed."""
        with self._lock:
            if not self._dirty:
                return
            data = orjson.loads(orjson.dumps(self._data))
            self._dirty = False
        write_json_atomic(self._path, data)
