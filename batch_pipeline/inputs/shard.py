"""Pack valid requests into shards that never exceed a limit, written streaming and hashed.

One shard is open per (provider, model, endpoint); before a request would push it over the
request count or byte limit it is closed and a new one starts, so no shard can exceed a limit
and input order is kept within each shard. Lines are buffered in small blocks and appended to a
temporary file (no file handle stays open), so memory is bounded by the block size, not the file.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import orjson

from batch_pipeline.inputs.models import ShardLimits
from batch_pipeline.providers import GATEWAY_MAX_BODY_BYTES, PROVIDERS

# Room for the multipart or inline-create envelope around a shard sent through the gateway.
GATEWAY_ENVELOPE_MARGIN = 256 * 1024
BLOCK_BYTES = 256 * 1024
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
MIN_BLOCK_BYTES = 16 * 1024
WRITES_AHEAD = 8
SHARD_ID_CHARS = 20

GroupKey = tuple[str, str, str]


def effective_limits(overrides: dict[str, ShardLimits]) -> dict[str, ShardLimits]:
    """Per-provider limits: an override or the published default, capped by the gateway body cap.

    A shard goes through Bifrost as one upload or one inline create, so its bytes must also fit
    in `GATEWAY_MAX_BODY_BYTES` minus an envelope margin; one request must fit in a shard.
    """
    gateway_cap = GATEWAY_MAX_BODY_BYTES - GATEWAY_ENVELOPE_MARGIN
    limits: dict[str, ShardLimits] = {}
    for name, traits in PROVIDERS.items():
        base = overrides.get(name) or ShardLimits(
            max_requests=traits.max_requests_per_batch,
            max_bytes=traits.max_bytes_per_batch,
            max_bytes_per_request=traits.max_bytes_per_request,
        )
        max_bytes = min(base.max_bytes, gateway_cap)
        limits[name] = ShardLimits(
            max_requests=base.max_requests,
            max_bytes=max_bytes,
            max_bytes_per_request=max(1, min(base.max_bytes_per_request, max_bytes - 1)),
        )
    return limits


class ShardDraft:
    """A shard being filled (or filled): counts, line range and, when writing, its files.

    The index file holds one JSON object per flushed block, {"custom_ids": [...], "lines":
    [...]}, in shard order: cheap to write (one dumps per block) and to read back.
    """

    __slots__ = (
        "_flushed_bytes",
        "bytes",
        "count",
        "endpoint",
        "first_line",
        "ids",
        "index_path",
        "last_line",
        "lines",
        "max_bytes",
        "max_requests",
        "model",
        "path",
        "payloads",
        "provider",
        "sha",
    )

    def __init__(self, key: GroupKey, limits: ShardLimits, path: Path | None, line: int) -> None:
        self.provider, self.model, self.endpoint = key
        self.max_requests = limits.max_requests
        self.max_bytes = limits.max_bytes
        self.path = path
        self.index_path = path.with_suffix(".index.jsonl") if path is not None else None
        self.sha = _target_hash(key)
        self.count = 0
        self.bytes = 0
        self.first_line = line
        self.last_line = line
        self.payloads: list[bytes] = []
        self.ids: list[str] = []
        self.lines: list[int] = []
        self._flushed_bytes = 0

    @property
    def shard_id(self) -> str:
        """The content address: sha256 of target and exact bytes, shortened."""
        return self.sha.hexdigest()[:SHARD_ID_CHARS]

    @property
    def buffered_bytes(self) -> int:
        return self.bytes - self._flushed_bytes

    def take_block(self) -> tuple[bytes, list[str], list[int]] | None:
        """Hand over the buffered block (shard bytes, custom_ids, lines) for writing."""
        if not self.payloads:
            return None
        block = (b"\n".join(self.payloads) + b"\n", self.ids, self.lines)
        self._flushed_bytes = self.bytes
        self.payloads = []
        self.ids = []
        self.lines = []
        return block

    def write_block(self, data: bytes, ids: list[str], lines: list[int]) -> None:
        """Hash and append one block to the shard and index files (on the writer thread)."""
        assert self.path is not None and self.index_path is not None
        self.sha.update(data)
        with open(self.path, "ab") as out:
            out.write(data)
        with open(self.index_path, "ab") as out:
            out.write(orjson.dumps({"custom_ids": ids, "lines": lines}) + b"\n")

    def keep_only(self, drop_lines: set[int]) -> None:
        """Rewrite the flushed files without the given input lines (skip-mode duplicates)."""
        assert self.path is not None and self.index_path is not None
        kept_path = self.path.with_suffix(".kept")
        self.sha = _target_hash((self.provider, self.model, self.endpoint))
        self.count = self.bytes = self._flushed_bytes = self.first_line = self.last_line = 0
        ids: list[str] = []
        lines: list[int] = []
        with open(self.path, "rb") as shard, open(kept_path, "wb") as out:
            for custom_id, line in iter_index(self.index_path):
                payload = shard.readline()
                if line in drop_lines:
                    continue
                self.sha.update(payload)
                out.write(payload)
                ids.append(custom_id)
                lines.append(line)
                self.count += 1
                self.bytes += len(payload)
                self.first_line = self.first_line or line
                self.last_line = line
        kept_path.replace(self.path)
        self.index_path.write_bytes(orjson.dumps({"custom_ids": ids, "lines": lines}) + b"\n")
        self._flushed_bytes = self.bytes


def iter_index(index_path: Path) -> Iterator[tuple[str, int]]:
    """(custom_id, input line) for each request of a shard, in shard order."""
    with index_path.open("rb") as blocks:
        for block in blocks:
            entry = orjson.loads(block)
            yield from zip(entry["custom_ids"], entry["lines"], strict=True)


def _target_hash(key: GroupKey) -> hashlib._Hash:
    return hashlib.sha256("\x00".join(key).encode() + b"\x00")


class ShardPacker:
    """Assigns requests to shards within limits; writes them under work_dir unless counting only."""

    def __init__(self, limits: dict[str, ShardLimits], work_dir: Path | None) -> None:
        self.limits = limits
        self.work_dir = work_dir
        self.open: dict[GroupKey, ShardDraft] = {}
        self.done: list[ShardDraft] = []
        self.block_bytes = BLOCK_BYTES
        # Hashing and appending run on one writer thread, in submission order (hashlib and file
        # writes release the GIL); at most WRITES_AHEAD blocks wait, which bounds memory.
        self._writer = ThreadPoolExecutor(1) if work_dir is not None else None
        self._pending: deque[Future[None]] = deque()

    def add(self, key: GroupKey, custom_id: str, payload: bytes, line: int) -> ShardDraft:
        """Put one request into its group's open shard, rotating first if it would overflow."""
        size = len(payload) + 1
        draft = self.open.get(key)
        if (
            draft is None
            or draft.count >= draft.max_requests
            or draft.bytes + size > draft.max_bytes
        ):
            draft = self._start(key, draft, line)
        draft.count += 1
        draft.bytes += size
        draft.last_line = line
        if self._writer is not None:
            draft.payloads.append(payload)
            draft.ids.append(custom_id)
            draft.lines.append(line)
            if draft.bytes - draft._flushed_bytes >= self.block_bytes:
                self._flush(draft)
        return draft

    def _flush(self, draft: ShardDraft) -> None:
        block = draft.take_block()
        if block is None or self._writer is None:
            return
        self._pending.append(self._writer.submit(draft.write_block, *block))
        while self._pending and (len(self._pending) > WRITES_AHEAD or self._pending[0].done()):
            self._pending.popleft().result()

    def _start(self, key: GroupKey, full: ShardDraft | None, line: int) -> ShardDraft:
        """Close the group's full shard (if any) and open a new one."""
        if full is not None:
            self._close(full)
        path = None
        if self.work_dir is not None:
            path = self.work_dir / f"shard-{len(self.done) + len(self.open):06d}.jsonl"
        draft = self.open[key] = ShardDraft(key, self.limits[key[0]], path, line)
        # Keep the sum of all groups' buffers bounded, however many groups are open.
        self.block_bytes = max(
            MIN_BLOCK_BYTES, min(BLOCK_BYTES, MAX_BUFFERED_BYTES // len(self.open))
        )
        return draft

    def _close(self, draft: ShardDraft) -> None:
        self._flush(draft)
        del self.open[(draft.provider, draft.model, draft.endpoint)]
        self.done.append(draft)

    def finish(self) -> list[ShardDraft]:
        """Close every open shard and wait for the writes; all drafts by first input line."""
        for draft in list(self.open.values()):
            self._close(draft)
        self.close()
        return sorted(self.done, key=lambda d: d.first_line)

    def close(self) -> None:
        """Wait for pending writes (raising the first failure) and stop the writer thread."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
