"""One streaming pass over an input file: read, validate, pack into shards, record problems.

Memory: the reader's reads (a few MiB) plus one line of at most the largest per-request limit,
the shard packer's buffers (bounded), the first `max_problems` problems, and for duplicate detection
12 bytes per line (a 64-bit hash of its custom_id and its line number in two arrays: 12 MB at
1M lines), sorted once at the end. Equal hashes are only suspects: a second pass over the file,
run only when there are any, compares the exact custom_ids of those lines alone.

orjson silently keeps the last of duplicate keys and rounds integers beyond 64 bits; a line
whose normalized form is not exactly as long as expected is therefore re-read by the stdlib
parser (`strict_problems`), which costs nothing on canonical (compact) lines.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batch_pipeline.inputs.models import FileSummary, InputOptions, Problem
from batch_pipeline.inputs.reader import KEEP_PREFIX_BYTES, LineReader, OversizeLine, ReadState
from batch_pipeline.inputs.shard import GroupKey, ShardDraft, ShardPacker, effective_limits
from batch_pipeline.inputs.validate import (
    FieldProblem,
    LineValidator,
    json_error_reason,
    strict_problems,
    utf8_error_reason,
)

LARGEST_LINES_KEPT = 5
TOKENS_PER_BYTE = 0.25  # ~4 bytes of request JSON per prompt token (a rough, generous estimate)

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
    """Scan one file. `on_reject` receives each bad line (skip policy); work_dir receives shards."""

    def __init__(
        self,
        path: Path,
        options: InputOptions,
        work_dir: Path | None = None,
        on_reject: RejectSink | None = None,
    ) -> None:
        self.path = path
        self.shown_path = str(path)
        self.options = options
        self.limits = effective_limits(options.limits)
        self.max_line_bytes = max(lim.max_bytes_per_request for lim in self.limits.values())
        self.validator = LineValidator(options.default_provider, self.limits)
        self.packer = ShardPacker(self.limits, work_dir)
        self.on_reject = on_reject
        self.result = ScanResult()
        # One 64-bit hash and one signed line number (negative: the line was invalid anyway) per
        # custom_id: 12 bytes a line, compared once at the end of the pass.
        self._id_hashes = array("q")
        self._id_lines = array("i")
        self._blank_lines = 0

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
        self._finish()
        return self.result

    def _first_pass(self) -> None:
        """Read every line once; the common valid line takes the shortest path.

        Valid requests are gathered per shard group over one batch of lines, then handed to the
        packer and to duplicate detection a group at a time.
        """
        result = self.result
        reader = LineReader(self.path, self.max_line_bytes)
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        check = self.validator.check
        add_many = self.packer.add_many
        hashes_extend = self._id_hashes.extend
        lines_extend = self._id_lines.extend
        largest: list[tuple[int, int]] = [(-1, 0)] * LARGEST_LINES_KEPT
        cap = self.max_line_bytes
        watch = -1  # lines longer than this are among the largest so far, or over the cap
        line = requests = payload_bytes = 0
        for batch in reader.batches():
            groups: dict[GroupKey, tuple[list[str], list[bytes], list[int]]] = {}
            for raw in batch:
                line += 1
                size = len(raw)
                if size > watch:
                    if size > largest[0][0]:
                        heapq.heapreplace(largest, (size, -line))
                    watch = min(largest[0][0], cap)
                    if size > cap:
                        self._oversize(line, raw, size)
                        continue
                # From here on raw is bytes: an OversizeLine is always over the cap.
                try:
                    obj = loads(raw)
                except decode_error as exc:
                    self._unparsed(line, raw, exc, reader.state)
                    continue
                checked = check(obj)
                if type(checked) is not tuple:
                    checked.extend(strict_problems(raw))
                    self._invalid(line, obj, checked, raw)
                    continue
                custom_id, route, payload = checked
                if len(payload) + route.shrink != size and self._ambiguous(
                    line, obj, raw, len(payload) + route.shrink
                ):
                    continue
                group = groups.get(route.key)
                if group is None:
                    group = groups[route.key] = ([], [], [])
                group[0].append(custom_id)
                group[1].append(payload)
                group[2].append(line)
            for key, (ids, payloads, numbers) in groups.items():
                add_many(key, ids, payloads, numbers)
                hashes_extend(map(hash, ids))
                lines_extend(numbers)
                requests += len(ids)
                payload_bytes += sum(map(len, payloads))
        state = result.read = reader.state
        blank = self._blank_lines
        summary = result.summary
        summary.bytes = state.bytes_read
        summary.lines = line - blank
        summary.blank_lines = blank
        summary.requests = requests
        summary.estimated_prompt_tokens = int(payload_bytes * TOKENS_PER_BYTE)
        summary.largest_lines = [
            (-neg, size) for size, neg in sorted(largest, reverse=True) if size > 0
        ]
        result.total_lines = line - blank
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

    def _unparsed(
        self, line: int, raw: bytes, exc: orjson.JSONDecodeError, state: ReadState
    ) -> None:
        """A line orjson refused: blank (counted, skipped) or rejected with a plain reason."""
        if not raw.strip():
            self._blank_lines += 1
            return
        reason = utf8_error_reason(raw) or json_error_reason(raw, exc, state.unterminated_last_line)
        self._reject(line, None, [(None, reason)], raw)

    def _ambiguous(self, line: int, obj: object, raw: bytes, expected: int) -> bool:
        """Reject a valid-looking line that is not canonical and that orjson may have misread."""
        if _canonical_crlf(raw, expected):
            return False
        strict = strict_problems(raw)
        if strict:
            self._invalid(line, obj, strict, raw)
        return bool(strict)

    def _invalid(self, line: int, obj: object, problems: list[FieldProblem], raw: bytes) -> None:
        """Reject a parsed line; its custom_id still counts for duplicate detection."""
        custom_id = _custom_id_of(obj)
        if custom_id is not None:
            self._id_hashes.append(hash(custom_id))
            self._id_lines.append(-line)
        self._reject(line, custom_id, problems, raw)

    def _oversize(self, line: int, raw: bytes | OversizeLine, size: int) -> None:
        prefix = raw.prefix if isinstance(raw, OversizeLine) else raw[:KEEP_PREFIX_BYTES]
        reason = (
            f"line is {size:,} bytes, over the largest per-request limit "
            f"({self.max_line_bytes:,} bytes)"
        )
        self._reject(line, None, [(None, reason)], prefix, truncated=size > len(prefix))

    def _reject(
        self,
        line: int,
        custom_id: str | None,
        problems: list[FieldProblem],
        raw: bytes,
        truncated: bool = False,
        uncapped: bool = False,
    ) -> None:
        self.result.rejected_lines += 1
        for field_name, reason in problems:
            self._problem(
                Problem(
                    path=self.shown_path,
                    line=line,
                    field=field_name,
                    reason=reason,
                    custom_id=custom_id,
                ),
                uncapped,
            )
        if self.on_reject is not None:
            text = "; ".join(reason if f is None else f"{f}: {reason}" for f, reason in problems)
            self.on_reject(line, custom_id, text, raw, truncated)

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
            for raw in batch:
                line += 1
                if line not in wanted:
                    continue
                custom_id = _custom_id_of(orjson.loads(raw))
                assert custom_id is not None  # it had one in the first pass
                first = first_line.setdefault(custom_id, line)
                if first == line:
                    continue
                reason = _duplicate_reason(custom_id, first)
                if line in valid:
                    dropped.add(line)
                    self._reject(line, custom_id, [("custom_id", reason)], raw, uncapped=True)
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
        unknown = self.validator.unknown_keys
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


def _canonical_crlf(raw: bytes, expected: int) -> bool:
    """True when the only difference from a canonical line is a CRLF line ending."""
    return len(raw) == expected + 1 and raw.endswith(b"\r")


def _custom_id_of(obj: object) -> str | None:
    """The line's custom_id when it is a non-empty string (the ones duplicates are judged on)."""
    if type(obj) is dict:
        custom_id = obj.get("custom_id")
        if type(custom_id) is str and custom_id:
            return custom_id
    return None


def _duplicate_reason(custom_id: str, first: int) -> str:
    shown = custom_id if len(custom_id) <= 40 else custom_id[:37] + "..."
    return f"duplicate {shown!r}, also used on line {first}"
