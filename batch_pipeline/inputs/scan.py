"""One streaming pass over an input file: read, validate, pack into shards, record problems.

The reader yields blocks of complete lines; each is scanned (`scan_block`: parse, check,
normalize) in this process or, for a large file, on worker processes (`BlockPool`), and the
outcomes are merged here in file order, so both ways give the same problems, shards and plan.

Memory: the reader's reads and the blocks being scanned (a few MiB each, a bounded number at
once), one line of at most the largest per-request limit, the shard packer's buffers (bounded),
the first `max_problems` problems, and for duplicate detection 12 bytes per line (a 64-bit hash
of its custom_id and its line number in two arrays: 12 MB at 1M lines), sorted once at the end.
Equal hashes are only suspects: a second pass over the file, run only when there are any,
compares the exact custom_ids of those lines alone.
"""

from __future__ import annotations

import heapq
import os
from array import array
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import orjson

from batch_pipeline.inputs import reader as reader_module
from batch_pipeline.inputs.block import (
    LARGEST_LINES_KEPT,
    BlockScan,
    BlockSettings,
    Reject,
    custom_id_of,
    oversize_reject,
    scan_block,
)
from batch_pipeline.inputs.models import FileSummary, InputOptions, Problem
from batch_pipeline.inputs.reader import (
    InputChanged,
    LineReader,
    OversizeLine,
    ReadState,
)
from batch_pipeline.inputs.shard import ShardDraft, ShardPacker, effective_limits
from batch_pipeline.inputs.validate import LineValidator
from batch_pipeline.inputs.workers import BlockPool, worker_count
from batch_pipeline.ledger.storage import DataPath, is_local

TOKENS_PER_BYTE = 0.25  # ~4 bytes of request JSON per prompt token (a rough, generous estimate)
UNKNOWN_KEYS_LISTED = 20  # top-level fields named in the notes, the first ones seen
BLOCKS_AHEAD_PER_WORKER = 4  # blocks queued or scanned ahead of the merge (bounds memory)

RejectSink = Callable[[int, str | None, str, bytes, bool], None]


@dataclass
class ScanResult:
    """Everything one pass learned: problems, notes, summary, shard drafts, line counts."""

    problems: list[Problem] = field(default_factory=list)
    total_problems: int = 0
    fatal: bool = False
    notes: list[str] = field(default_factory=list)
    summary: FileSummary = field(default_factory=FileSummary)
    drafts: list[ShardDraft] = field(default_factory=list)
    rejected_lines: int = 0
    total_lines: int = 0
    read: ReadState = field(default_factory=ReadState)


class FileScan:
    """Scan one file. `on_reject` receives each bad line (skip policy); work_dir receives shards.

    `workers` is how many processes scan blocks (0: this one); None picks by file size and CPUs.
    """

    def __init__(
        self,
        path: DataPath,
        options: InputOptions,
        work_dir: Path | None = None,
        on_reject: RejectSink | None = None,
        workers: int | None = None,
    ) -> None:
        self.path = path
        self.shown_path = str(path)
        self.options = options
        self.limits = effective_limits(options.limits)
        self.max_line_bytes = max(lim.max_bytes_per_request for lim in self.limits.values())
        self.settings = BlockSettings(
            options.default_provider, self.limits, self.max_line_bytes, keep=work_dir is not None
        )
        self.packer = ShardPacker(self.limits, work_dir)
        self.work_dir = work_dir
        self.on_reject = on_reject
        self.workers = workers
        self.result = ScanResult()
        self.endpoint: str | None = None  # the file's endpoint, once a line has set it
        # One 64-bit hash and one signed line number (negative: the line was invalid anyway) per
        # custom_id: 12 bytes a line, compared once at the end of the pass.
        self._id_hashes = array("q")
        self._id_lines = array("i")
        self._largest: list[tuple[int, int]] = [(-1, 0)] * LARGEST_LINES_KEPT
        self._unknown_keys: dict[str, int] = {}
        self._blank_lines = 0
        self._requests = 0
        self._payload_bytes = 0

    def run(self) -> ScanResult:
        """The pass itself, then the duplicate check, then the summary."""
        try:
            self._first_pass()
        finally:
            self.result.drafts = self.packer.finish()
        if not self.result.fatal:
            groups = _lines_sharing_a_hash(self._id_hashes, self._id_lines)
            del self._id_hashes, self._id_lines
            if groups:
                self._resolve_duplicates(groups)
            self._meet_minimums()
        self._finish()
        return self.result

    def _first_pass(self) -> None:
        """Scan every block once, here or on workers, merging the outcomes in file order."""
        reader = LineReader(self.path, self.max_line_bytes, reader_module.CHUNK_BYTES)
        # workers read a local file's blocks by byte range themselves
        local = self.path if is_local(self.path) else None
        by_range = local is not None
        version = _version(local) if local is not None else None
        pool = self._pool(local)
        ahead = BLOCKS_AHEAD_PER_WORKER * max(self.workers or 0, 1)
        pending: deque[Future[BlockScan] | BlockScan] = deque()
        validator = LineValidator(self.options.default_provider, self.limits)
        line = 0
        try:
            for block in reader.blocks():
                first = line + 1
                if isinstance(block, OversizeLine):
                    line += 1
                    pending.append(self._oversize(first, block))
                    continue
                line += block.lines()
                last = reader.state.unterminated_last_line
                if pool is None:
                    scan = scan_block(
                        validator, self.settings, block.content(), first, self.endpoint, last
                    )
                    pending.append(scan)
                else:
                    offset = block.offset if by_range else None
                    sent = block.content() if offset is None else (offset, len(block))
                    pending.append(pool.submit(sent, first, self.endpoint, last))
                # Until a line sets the file's endpoint, each block waits for the one before.
                while pending and (
                    self.endpoint is None or len(pending) > ahead or _ready(pending[0])
                ):
                    self._merge(_outcome(pending.popleft()))
            while pending:
                self._merge(_outcome(pending.popleft()))
        finally:
            if pool is not None:
                pool.close()
        if pool is not None and local is not None and _version(local) != version:
            raise InputChanged(f"{self.shown_path}: the file changed while it was read")
        self._summarize(reader.state, line)

    def _pool(self, local: Path | None) -> BlockPool | None:
        """Worker processes for this file (reading it by byte range when it is `local`), or
        None to scan it in this process."""
        if self.workers is None:
            try:
                size = self.path.stat().st_size
            except OSError:
                size = 0
            self.workers = worker_count(size)
        if self.workers < 2:
            return None
        pool = BlockPool.start(
            self.workers,
            self.settings._replace(spill_dir=None if self.work_dir is None else str(self.work_dir)),
            os.fspath(local) if local is not None else None,
        )
        if pool is None:
            self.workers = 0
        return pool

    def _merge(self, scan: BlockScan) -> None:
        """Fold one block's outcome into the file's, in file order."""
        self.packer.add_runs(scan.runs)
        for run in scan.runs:
            self._requests += run.count
            self._payload_bytes += run.size - run.count
        self._id_hashes.extend(scan.id_hashes)
        self._id_lines.extend(scan.id_lines)
        for reject in scan.rejects:
            self._reject(reject)
        self._blank_lines += scan.blank
        largest = self._largest
        for entry in scan.largest:
            if entry[0] > largest[0][0]:
                heapq.heapreplace(largest, entry)
        known = self._unknown_keys
        for key, count in scan.unknown_keys.items():
            if key in known or len(known) < UNKNOWN_KEYS_LISTED:
                known[key] = known.get(key, 0) + count
        if self.endpoint is None:
            self.endpoint = scan.endpoint

    def _oversize(self, line: int, oversize: OversizeLine) -> BlockScan:
        """The outcome of a line too long to hold (the reader kept only its first bytes)."""
        scan = BlockScan(lines=1, largest=[(oversize.size, -line)])
        scan.rejects.append(
            oversize_reject(line, oversize.size, oversize.prefix, self.max_line_bytes)
        )
        return scan

    def _summarize(self, state: ReadState, lines: int) -> None:
        result = self.result
        result.read = state
        blank = self._blank_lines
        summary = result.summary
        summary.bytes = state.bytes_read
        summary.lines = lines - blank
        summary.blank_lines = blank
        summary.requests = self._requests
        summary.estimated_prompt_tokens = int(self._payload_bytes * TOKENS_PER_BYTE)
        summary.largest_lines = [
            (-neg, size) for size, neg in sorted(self._largest, reverse=True) if size > 0
        ]
        result.total_lines = lines - blank
        if state.fatal:
            result.fatal = True
            self._problem(Problem(path=self.shown_path, line=None, field=None, reason=state.fatal))
        elif result.total_lines == 0:
            result.fatal = True
            self._problem(
                Problem(
                    path=self.shown_path,
                    line=None,
                    field=None,
                    reason=f"no requests (the file has only {blank} blank lines)",
                )
            )

    def _reject(self, reject: Reject, uncapped: bool = False) -> None:
        self.result.rejected_lines += 1
        for field_name, reason in reject.problems:
            self._problem(
                Problem(
                    path=self.shown_path,
                    line=reject.line,
                    field=field_name,
                    reason=reason,
                    custom_id=reject.custom_id,
                ),
                uncapped,
            )
        if self.on_reject is not None:
            text = "; ".join(
                reason if f is None else f"{f}: {reason}" for f, reason in reject.problems
            )
            self.on_reject(reject.line, reject.custom_id, text, reject.raw, reject.truncated)

    def _problem(self, problem: Problem, uncapped: bool = False) -> None:
        self.result.total_problems += 1
        if uncapped or len(self.result.problems) < self.options.max_problems:
            self.result.problems.append(problem)

    def _resolve_duplicates(self, groups: list[list[int]]) -> None:
        """Second pass over the lines whose custom_id hashes collide: exact ids decide.

        A line repeating an earlier line's exact custom_id is a problem naming that line; under
        the skip policy it is rejected and removed from its shard when it was otherwise valid.
        """
        valid = {line for group in groups for line in group if line > 0}
        wanted = {abs(line) for group in groups for line in group}
        first_line: dict[str, int] = {}
        dropped: set[int] = set()
        line = 0
        for batch in LineReader(self.path, self.max_line_bytes).batches():
            for entry in batch:
                line += 1
                if line not in wanted:
                    continue
                raw = cast(bytes, entry)  # a wanted line had a custom_id: it was not over-long
                custom_id = custom_id_of(orjson.loads(raw))
                assert custom_id is not None  # it had one in the first pass
                first = first_line.setdefault(custom_id, line)
                if first == line:
                    continue
                reason = _duplicate_reason(custom_id, first)
                if line in valid:
                    dropped.add(line)
                    self._reject(
                        Reject(line, custom_id, [("custom_id", reason)], raw), uncapped=True
                    )
                else:
                    self._problem(
                        Problem(
                            path=self.shown_path,
                            line=line,
                            field="custom_id",
                            reason=reason,
                            custom_id=custom_id,
                        ),
                        uncapped=True,
                    )
        self.result.problems.sort(key=lambda p: p.line or 0)
        del self.result.problems[self.options.max_problems :]
        self.result.summary.requests -= len(dropped)
        if dropped and self.options.on_invalid == "skip":
            for draft in self.result.drafts:
                if draft.path is not None and any(
                    draft.first_line <= n <= draft.last_line for n in dropped
                ):
                    draft.keep_only(dropped)

    def _meet_minimums(self) -> None:
        """No shard below its provider's minimum per batch (Bedrock: 100 records a job): the
        last shard of a group takes requests from the one before; a group too small for one
        batch is refused, its lines rejected with the reason."""
        by_group: dict[tuple[str, str, str], list[ShardDraft]] = {}
        for draft in self.result.drafts:
            if draft.count:
                by_group.setdefault((draft.provider, draft.model, draft.endpoint), []).append(draft)
        refused: dict[int, str] = {}
        for (provider, model, _), drafts in by_group.items():
            least = self.limits[provider].min_requests
            last = drafts[-1]
            if last.count >= least:
                continue
            if len(drafts) > 1:
                giver, need = drafts[-2], least - last.count
                # (when only counting, the shards stay as many; a giver left short is only
                # possible under limits of less than twice the minimum)
                if last.path is not None and giver.count - need >= least:
                    giver.give_tail(last, need)
                continue
            total = sum(d.count for d in drafts)
            reason = (
                f"{provider}/{model} has {total} request(s) in this file; a {provider} batch "
                f"takes at least {least}, so none of them can be sent"
            )
            if last.path is None:  # only counting (validate): the problem is the file's
                self._problem(Problem(path=self.shown_path, line=None, field=None, reason=reason))
                continue
            for _, line in last.lines():
                refused[line] = reason
            last.keep_only(set(refused))
        if refused:
            self._reject_lines(refused)

    def _reject_lines(self, reasons: dict[int, str]) -> None:
        """Reject valid lines after the pass, reading them again for their text."""
        line = 0
        for batch in LineReader(self.path, self.max_line_bytes).batches():
            for entry in batch:
                line += 1
                if line in reasons:
                    raw = cast(bytes, entry)
                    custom_id = custom_id_of(orjson.loads(raw))
                    self._reject(Reject(line, custom_id, [(None, reasons[line])], raw), True)
        self.result.summary.requests -= len(reasons)
        self.result.problems.sort(key=lambda p: p.line or 0)

    def _finish(self) -> None:
        result = self.result
        drafts = [d for d in result.drafts if d.count > 0]
        result.drafts = drafts
        summary = result.summary
        groups = {(d.provider, d.model, d.endpoint) for d in drafts}
        summary.models = sorted({f"{p}/{m}" for p, m, _ in groups})
        summary.endpoints = sorted({e for _, _, e in groups})
        summary.providers = sorted({p for p, _, _ in groups})
        summary.shards = len(drafts)
        state = result.read
        if state.bom:
            result.notes.append("UTF-8 byte order mark at the start of the file (ignored)")
        if state.crlf:
            result.notes.append("CRLF line endings (accepted)")
        if summary.blank_lines:
            result.notes.append(f"{summary.blank_lines} blank line(s) skipped")
        unknown = self._unknown_keys
        if unknown:
            listed = ", ".join(f"{k} ({n} lines)" for k, n in sorted(unknown.items()))
            result.notes.append(f"top-level fields not sent upstream: {listed}")


def _lines_sharing_a_hash(hashes: array, lines: array) -> list[list[int]]:
    """Groups of (signed) line numbers whose custom_id hashes are equal, in line order."""
    if len(hashes) < 2:
        return []
    import numpy as np  # only here: one sort of 8-byte keys, far smaller than a set of ints

    keys = np.frombuffer(hashes, dtype=np.int64)
    ordered = np.sort(keys)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if not len(repeated):
        return []
    positions = np.flatnonzero(np.isin(keys, repeated))
    line_numbers = np.frombuffer(lines, dtype=np.int32)
    groups: dict[int, list[int]] = {}
    for position in positions.tolist():
        groups.setdefault(int(keys[position]), []).append(int(line_numbers[position]))
    return list(groups.values())


def _duplicate_reason(custom_id: str, first: int) -> str:
    shown = custom_id if len(custom_id) <= 40 else custom_id[:37] + "..."
    return f"duplicate {shown!r}, also used on line {first}"


def _ready(item: Future[BlockScan] | BlockScan) -> bool:
    return not isinstance(item, Future) or item.done()


def _outcome(item: Future[BlockScan] | BlockScan) -> BlockScan:
    return item.result() if isinstance(item, Future) else item


def _version(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten: inode, size, modification and change times."""
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns
