"""Pack valid requests into shards that never exceed a limit, written streaming and hashed.

One shard is open per (provider, model, endpoint); before a request would push it over the
request count or byte limit it is closed and a new one starts, so no shard can exceed a limit
and input order is kept within each shard. Lines are buffered in small blocks, handed a few MiB
at a time to a writer thread that hashes them and appends them to a temporary file, so memory is
bounded by the buffer sizes, not the file.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import orjson

from batch_pipeline.inputs.models import ShardLimits
from batch_pipeline.providers import GATEWAY_MAX_BODY_BYTES, PROVIDERS

# Room for the multipart or inline-create envelope around a shard sent through the gateway.
GATEWAY_ENVELOPE_MARGIN = 256 * 1024
BLOCK_BYTES = 256 * 1024
UNIT_BYTES = 4 * 1024 * 1024  # finished blocks handed to the writer thread at once
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
MIN_BLOCK_BYTES = 16 * 1024
WRITES_AHEAD = 2
INDEX_BUFFER_BYTES = 1024 * 1024  # index lines are written out this much at a time
MAX_OPEN_DRAFT_FILES = 64  # groups whose shard files the writer keeps open between units
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

    The index file holds one JSON object per block of about BLOCK_BYTES of requests,
    {"custom_ids": [...], "lines": [...]}, in shard order: cheap to write (one dumps per block)
    and to read back. Finished blocks are written and hashed a unit (a few MiB) at a time.
    """

    __slots__ = (
        "_block_start",
        "_files",
        "blocks",
        "bytes",
        "count",
        "endpoint",
        "first_line",
        "ids",
        "index",
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
        "unit_start",
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
        self.payloads: list[bytes] = []  # the current block: requests, custom_ids, lines
        self.ids: list[str] = []
        self.lines: list[int] = []
        self.blocks: list[bytes] = []  # finished blocks not yet handed to the writer
        self.index: list[bytes] = []  # ... and their index lines
        self._block_start = 0
        self.unit_start = 0
        self._files: tuple[BinaryIO, BinaryIO] | None = None  # shard, index (writer thread)

    @property
    def shard_id(self) -> str:
        """The content address: sha256 of target and exact bytes, shortened."""
        return self.sha.hexdigest()[:SHARD_ID_CHARS]

    def block_full(self, block_bytes: int) -> bool:
        """True when the current block holds at least block_bytes of requests."""
        return self.bytes - self._block_start >= block_bytes

    def end_block(self) -> None:
        """Finish the current block: its bytes are joined now, while they are in the cache."""
        if self.payloads:
            self.blocks.append(b"\n".join(self.payloads) + b"\n")
            self.index.append(orjson.dumps({"custom_ids": self.ids, "lines": self.lines}) + b"\n")
            self.payloads = []
            self.ids = []
            self.lines = []
        self._block_start = self.bytes

    def take_unit(self) -> tuple[list[bytes], list[bytes]]:
        """Hand over the finished blocks and their index lines for writing."""
        unit = (self.blocks, self.index)
        self.blocks = []
        self.index = []
        self.unit_start = self.bytes
        return unit

    def write_unit(self, blocks: list[bytes], index: list[bytes], last: bool) -> None:
        """Hash and append blocks to the shard and index files (on the writer thread).

        A unit is a few long GIL-free steps (one hash, one write; the files stay open until
        `last`), so the thread seldom waits for the parsing thread to hand over the GIL.
        """
        assert self.path is not None and self.index_path is not None
        data = b"".join(blocks)
        self.sha.update(data)
        if self._files is None:  # kept open across calls: closed by `last` or close_files
            self._files = (
                open(self.path, "ab"),  # noqa: SIM115
                open(self.index_path, "ab", buffering=INDEX_BUFFER_BYTES),  # noqa: SIM115
            )
        shard, index_file = self._files
        shard.write(data)
        index_file.write(b"".join(index))
        if last:
            self.close_files()

    def close_files(self) -> None:
        """Close the shard and index files if the writer left them open."""
        if self._files is not None:
            for handle in self._files:
                handle.close()
            self._files = None

    def keep_only(self, drop_lines: set[int]) -> None:
        """Rewrite the written files without the given input lines (skip-mode duplicates)."""
        assert self.path is not None and self.index_path is not None
        kept_path = self.path.with_suffix(".kept")
        self.sha = _target_hash((self.provider, self.model, self.endpoint))
        self.count = self.bytes = self.first_line = self.last_line = 0
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
        self._block_start = self.unit_start = self.bytes


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
        self.unit_bytes = UNIT_BYTES
        # Hashing and appending run on one writer thread, in submission order (hashlib and file
        # writes release the GIL); at most WRITES_AHEAD units wait, which bounds memory.
        self._writer = ThreadPoolExecutor(1) if work_dir is not None else None
        self._pending: deque[Future[None]] = deque()

    def add(self, key: GroupKey, custom_id: str, payload: bytes, line: int) -> None:
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
            if draft.block_full(self.block_bytes):
                draft.end_block()
                if draft.bytes - draft.unit_start >= self.unit_bytes:
                    self._write(draft)

    def add_many(
        self, key: GroupKey, ids: list[str], payloads: list[bytes], lines: list[int]
    ) -> None:
        """`add` each request in order: in one step when all fit the open shard and block."""
        draft = self.open.get(key)
        count = len(payloads)
        size = sum(map(len, payloads)) + count
        if (
            draft is None
            or draft.count + count > draft.max_requests
            or draft.bytes + size > draft.max_bytes
            # ... or they would fill the block, which must end right after the request doing so.
            or (self._writer is not None and draft.block_full(self.block_bytes - size))
        ):
            for custom_id, payload, line in zip(ids, payloads, lines, strict=True):
                self.add(key, custom_id, payload, line)
            return
        draft.count += count
        draft.bytes += size
        draft.last_line = lines[-1]
        if self._writer is not None:
            draft.payloads += payloads
            draft.ids += ids
            draft.lines += lines

    def _write(self, draft: ShardDraft, last: bool = False) -> None:
        """Hand the draft's finished blocks to the writer thread (`last`: it closes the files)."""
        if self._writer is None or not (draft.blocks or last):
            return
        # Files stay open between units unless too many groups are open at once.
        last = last or len(self.open) > MAX_OPEN_DRAFT_FILES
        blocks, index = draft.take_unit()
        self._pending.append(self._writer.submit(draft.write_unit, blocks, index, last))
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
        share = MAX_BUFFERED_BYTES // len(self.open)
        self.block_bytes = max(MIN_BLOCK_BYTES, min(BLOCK_BYTES, share))
        self.unit_bytes = max(self.block_bytes, min(UNIT_BYTES, share))
        return draft

    def _close(self, draft: ShardDraft) -> None:
        draft.end_block()
        self._write(draft, last=True)
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
            for draft in [*self.open.values(), *self.done]:
                draft.close_files()
