"""Pack valid requests into shards that never exceed a limit, written streaming and hashed.

One shard is open per (provider, model, endpoint); a group's requests arrive as runs (a block's
requests of that group, already joined), and a run that would push the open shard over the
request count or byte limit is cut at a request boundary: the shard is closed and a new one
starts, so no shard can exceed a limit and input order is kept within each shard. Runs are handed
a few MiB at a time to a writer thread that hashes them and appends them to a temporary file
(reading back what a worker process spilled to disk), so memory is bounded by the buffer sizes,
not the file.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, cast

import orjson

from batch_pipeline.inputs.block import GroupKey, GroupRun, Part, Segment
from batch_pipeline.inputs.models import ShardLimits
from batch_pipeline.ledger.storage import DataPath
from batch_pipeline.providers import GATEWAY_MAX_BODY_BYTES, PROVIDERS

# Room for the multipart or inline-create envelope around a shard sent through the gateway.
GATEWAY_ENVELOPE_MARGIN = 256 * 1024
UNIT_BYTES = 4 * 1024 * 1024  # runs handed to the writer thread at once
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
MIN_UNIT_BYTES = 64 * 1024
WRITES_AHEAD = 2
INDEX_BUFFER_BYTES = 1024 * 1024  # index lines are written out this much at a time
MAX_OPEN_DRAFT_FILES = 64  # groups whose shard files the writer keeps open between units
SHARD_ID_CHARS = 20


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
            min_requests=traits.min_requests_per_batch,
        )
        max_bytes = min(base.max_bytes, gateway_cap)
        limits[name] = ShardLimits(
            max_requests=base.max_requests,
            max_bytes=max_bytes,
            max_bytes_per_request=max(1, min(base.max_bytes_per_request, max_bytes - 1)),
            min_requests=base.min_requests,
        )
    return limits


class ShardDraft:
    """A shard being filled (or filled): counts, line range and, when writing, its files.

    The index file holds one JSON object per run, {"custom_ids": [...], "lines": [...]}, in
    shard order: cheap to write (made with the run) and to read back. Runs are written and
    hashed a unit (a few MiB) at a time.
    """

    __slots__ = (
        "_files",
        "buffered",
        "bytes",
        "count",
        "endpoint",
        "first_line",
        "index",
        "index_path",
        "last_line",
        "max_bytes",
        "max_requests",
        "model",
        "path",
        "provider",
        "runs",
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
        self.runs: list[Part] = []  # requests not yet handed to the writer
        self.index: list[bytes] = []  # ... and their index lines
        self.buffered = 0
        self._files: tuple[BinaryIO, BinaryIO] | None = None  # shard, index (writer thread)

    @property
    def shard_id(self) -> str:
        """The content address: sha256 of target and exact bytes, shortened."""
        return self.sha.hexdigest()[:SHARD_ID_CHARS]

    def room(self) -> tuple[int, int]:
        """How many more requests, and bytes, the shard can take."""
        return self.max_requests - self.count, self.max_bytes - self.bytes

    def take(self, parts: list[Part], count: int, size: int, index: bytes, last_line: int) -> None:
        """Add `count` requests (`parts` joined, `size` bytes) that fit; buffer their parts."""
        self.count += count
        self.bytes += size
        self.last_line = last_line
        if parts:
            self.runs += parts
            self.index.append(index)
            self.buffered += size

    def take_unit(self) -> tuple[list[Part], list[bytes]]:
        """Hand over the buffered runs and their index lines for writing."""
        unit = (self.runs, self.index)
        self.runs = []
        self.index = []
        self.buffered = 0
        return unit

    def write_unit(
        self, runs: list[Part], index: list[bytes], last: bool, spills: SpillFiles
    ) -> None:
        """Hash and append runs to the shard and index files (on the writer thread).

        A unit is a few long GIL-free steps (reads of spilled runs, one hash, one write; the
        files stay open until `last`), so the thread seldom waits for the GIL.
        """
        assert self.path is not None and self.index_path is not None
        if self._files is None:  # kept open across calls: closed by `last` or close_files
            self._files = (
                open(self.path, "ab"),  # noqa: SIM115
                open(self.index_path, "ab", buffering=INDEX_BUFFER_BYTES),  # noqa: SIM115
            )
        shard, index_file = self._files
        data = b"".join(part if isinstance(part, bytes) else spills.take(part) for part in runs)
        self.sha.update(data)
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
        self._rewrite([], lambda line: line not in drop_lines)

    def give_tail(self, other: ShardDraft, count: int) -> None:
        """Move this shard's last `count` requests to the front of `other`, the next shard of
        the group (so that `other` reaches a provider's minimum per batch)."""
        assert self.index_path is not None and self.path is not None
        entries = list(iter_index(self.index_path))
        moved = {line for _, line in entries[-count:]}
        with open(self.path, "rb") as shard:
            head = [
                (custom_id, line, payload)
                for (custom_id, line), payload in zip(entries, shard, strict=True)
                if line in moved
            ]
        self.keep_only(moved)
        other._rewrite(head, lambda line: True)

    def lines(self) -> list[tuple[str, int]]:
        """(custom_id, input line) of every request written, in shard order."""
        assert self.index_path is not None
        return list(iter_index(self.index_path))

    def _rewrite(self, head: list[tuple[str, int, bytes]], keep: Callable[[int], bool]) -> None:
        """Rewrite the written files as `head` (custom_id, line, payload) and then the requests
        `keep` accepts, hashing them again."""
        assert self.path is not None and self.index_path is not None
        kept_path = self.path.with_suffix(".kept")
        self.sha = _target_hash((self.provider, self.model, self.endpoint))
        self.count = self.bytes = self.first_line = self.last_line = 0
        ids: list[str] = []
        lines: list[int] = []
        with open(self.path, "rb") as shard, open(kept_path, "wb") as out:
            current = (
                (custom_id, line, shard.readline())
                for custom_id, line in iter_index(self.index_path)
            )
            for custom_id, line, payload in itertools.chain(head, current):
                if not keep(line):
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


def iter_index(index_path: DataPath) -> Iterator[tuple[str, int]]:
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
        self.unit_bytes = UNIT_BYTES
        # Hashing and appending run on one writer thread, in submission order (hashlib and file
        # writes release the GIL); at most WRITES_AHEAD units wait, which bounds memory.
        self._writer = ThreadPoolExecutor(1) if work_dir is not None else None
        self._pending: deque[Future[None]] = deque()
        self._syncer = ThreadPoolExecutor(1) if work_dir is not None else None
        self._syncs: list[Future[None]] = []
        self.spills = SpillFiles()

    def add_runs(self, runs: list[GroupRun]) -> None:
        """Add one block's runs, in order (see `add_run`)."""
        if self._writer is not None:
            # All first: the writer may finish one run's part of a spill file before the next
            # run is added, and must not delete the file then.
            self.spills.hold([part for run in runs for part in run.parts])
        for run in runs:
            self.add_run(run)

    def add_run(self, run: GroupRun) -> None:
        """Put a run of one group's requests into its open shard, cut where a limit says.

        Its spilled parts must be held already (`add_runs` does it).
        """
        draft = self.open.get(run.key) or self._start(run.key, None, run.first_line)
        parts = run.parts if self._writer is not None else []  # none when only counting
        room, byte_room = draft.room()
        if run.count <= room and run.size <= byte_room:
            self._take(draft, parts, run.count, run.size, run.index, run.last_line)
            return
        # The run crosses a limit: cut it into shards in one pass over its requests.
        ids, lines = _parse_index(run.index)
        joined = b"".join(cast(list[bytes], parts)) if parts and type(parts[0]) is bytes else None
        start = offset = 0
        while True:
            room, byte_room = draft.room()
            fit, size = _fitting(run.sizes, start, min(run.count - start, room), byte_room)
            if fit:
                end = start + fit
                index = orjson.dumps({"custom_ids": ids[start:end], "lines": lines[start:end]})
                piece = self.spills.piece(parts, joined, offset, size)
                self._take(draft, piece, fit, size, index + b"\n", lines[end - 1])
                start, offset = end, offset + size
                if start == run.count:
                    break
            assert draft.count, "one request always fits an empty shard"
            draft = self._start(run.key, draft, lines[start])
        self.spills.release(parts)  # each piece holds its own part of the spill file

    def _take(
        self,
        draft: ShardDraft,
        parts: list[Part],
        count: int,
        size: int,
        index: bytes,
        last_line: int,
    ) -> None:
        """Add requests that fit to the draft; write its buffer once a unit is full."""
        draft.take(parts, count, size, index, last_line)
        if draft.buffered >= self.unit_bytes:
            self._write(draft)
        elif parts and type(parts[-1]) is tuple and size < self.unit_bytes // 4:
            # A small group's part would keep its whole block's spill file on disk until the
            # group fills a unit: read it now instead.
            draft.runs[-1] = self.spills.take(cast(Segment, draft.runs[-1]))

    def _write(self, draft: ShardDraft, last: bool = False) -> Future[None] | None:
        """Hand the draft's buffered runs to the writer thread (`last`: it closes the files)."""
        if self._writer is None or not (draft.runs or last):
            return None
        # Files stay open between units unless too many groups are open at once.
        last = last or len(self.open) > MAX_OPEN_DRAFT_FILES
        runs, index = draft.take_unit()
        written = self._writer.submit(draft.write_unit, runs, index, last, self.spills)
        self._pending.append(written)
        while self._pending and (len(self._pending) > WRITES_AHEAD or self._pending[0].done()):
            self._pending.popleft().result()
        return written

    def _start(self, key: GroupKey, full: ShardDraft | None, line: int) -> ShardDraft:
        """Close the group's full shard (if any) and open a new one."""
        if full is not None:
            self._close(full)
        path = None
        if self.work_dir is not None:
            path = self.work_dir / f"shard-{len(self.done) + len(self.open):06d}.jsonl"
        draft = self.open[key] = ShardDraft(key, self.limits[key[0]], path, line)
        # Keep the sum of all groups' buffers bounded, however many groups are open.
        self.unit_bytes = max(MIN_UNIT_BYTES, min(UNIT_BYTES, MAX_BUFFERED_BYTES // len(self.open)))
        return draft

    def _close(self, draft: ShardDraft) -> None:
        written = self._write(draft, last=True)
        if written is not None and self._syncer is not None:
            # The files reach the disk now, in the background: publishing them is then quick.
            self._syncs.append(self._syncer.submit(_sync_after, written, draft))
        del self.open[(draft.provider, draft.model, draft.endpoint)]
        self.done.append(draft)

    def finish(self) -> list[ShardDraft]:
        """Close every open shard and wait for the writes; all drafts by first input line."""
        try:
            for draft in list(self.open.values()):
                self._close(draft)
        finally:
            self.close()
        return sorted(self.done, key=lambda d: d.first_line)

    def close(self) -> None:
        """Wait for pending writes (raising the first failure) and stop the writer threads;
        after a failure, writes not yet started are dropped."""
        try:
            while self._pending:
                self._pending.popleft().result()
            for synced in self._syncs:
                synced.result()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True, cancel_futures=True)
            if self._syncer is not None:
                self._syncer.shutdown(wait=True, cancel_futures=True)
            for draft in [*self.open.values(), *self.done]:
                draft.close_files()


class SpillFiles:
    """Counts the parts still pointing into each spill file; a file goes once none does.

    Parts are held on the scanning thread and taken (read) on the writer thread, hence the lock.
    """

    def __init__(self) -> None:
        self._holds: dict[str, int] = {}
        self._lock = threading.Lock()

    def hold(self, parts: list[Part]) -> None:
        """Count the spilled parts among `parts`."""
        with self._lock:
            for part in parts:
                if type(part) is tuple:
                    self._holds[part[0]] = self._holds.get(part[0], 0) + 1

    def piece(self, parts: list[Part], joined: bytes | None, offset: int, size: int) -> list[Part]:
        """Bytes offset..offset+size of a run's parts (`joined` when they are in memory)."""
        if not parts:
            return []
        if joined is not None:
            return [joined[offset : offset + size]]
        ((path, start, _),) = cast(list[Segment], parts)
        piece: list[Part] = [(path, start + offset, size)]
        self.hold(piece)
        return piece

    def release(self, parts: list[Part]) -> None:
        """Drop the holds of spilled parts that will not be read."""
        with self._lock:
            for part in parts:
                if type(part) is tuple:
                    self._drop(part[0])

    def take(self, part: Segment) -> bytes:
        """A spilled part's bytes; its file is deleted once no part points into it."""
        path, offset, size = part
        with open(path, "rb") as spilled:
            spilled.seek(offset)
            data = spilled.read(size)
        if len(data) != size:
            raise OSError(f"{path}: the spill file ended early")
        with self._lock:
            self._drop(path)
        return data

    def _drop(self, path: str) -> None:
        self._holds[path] -= 1
        if not self._holds[path]:
            del self._holds[path]
            os.unlink(path)


def _sync_after(written: Future[None], draft: ShardDraft) -> None:
    """Once a closed shard's last write is done, flush its files to disk."""
    written.result()
    for path in (draft.path, draft.index_path):
        assert path is not None
        with open(path, "rb") as done:
            os.fsync(done.fileno())


def _fitting(sizes: array, start: int, most: int, byte_room: int) -> tuple[int, int]:
    """How many requests from `start` (at most `most`) fit in byte_room, and their bytes."""
    fit = total = 0
    for size in sizes[start : start + most]:
        if total + size + 1 > byte_room:
            break
        fit, total = fit + 1, total + size + 1
    return fit, total


def _parse_index(index: bytes) -> tuple[list[str], list[int]]:
    entry = orjson.loads(index)
    return entry["custom_ids"], entry["lines"]
