"""The per-line work of a scan, one block of complete lines at a time: parse, check, normalize.

Given the file's endpoint, a block's outcome depends on nothing else in the file, so blocks can
be scanned in this process or on worker processes (`inputs.workers`) and merged in file order by
`FileScan`; both ways run this code. The outcome holds no Python object per valid request: they
come as one joined run per shard group, ready for the shard packer.

orjson silently keeps the last of duplicate keys and rounds integers beyond 64 bits; a line
whose normalized form is not exactly as long as expected is therefore re-read by the stdlib
parser (`strict_problems`), which costs nothing on canonical (compact) lines.
"""

from __future__ import annotations

import heapq
import os
from array import array
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import orjson

from batch_pipeline.inputs.models import ShardLimits
from batch_pipeline.inputs.reader import KEEP_PREFIX_BYTES, split_windows
from batch_pipeline.inputs.validate import (
    FieldProblem,
    LineValidator,
    json_error_reason,
    strict_problems,
    utf8_error_reason,
)

LARGEST_LINES_KEPT = 5

GroupKey = tuple[str, str, str]


# Where a run's bytes are: joined pieces in memory, or (path, offset, size) in a spill file.
Segment = tuple[str, int, int]
Part = bytes | Segment


class GroupRun(NamedTuple):
    """A block's valid requests of one shard group, in line order.

    `parts` joined are every normalized request followed by `\\n` (`size` bytes in all, each
    request's in `sizes`); empty when only counting. `index` is one index-file line,
    {"custom_ids": [...], "lines": [...]}, naming the requests in the same order.
    """

    key: GroupKey
    count: int  # type: ignore[assignment]  # a field, shadowing tuple.count
    size: int
    sizes: array  # "I": bytes of each request, without its newline
    parts: list[Part]
    index: bytes  # type: ignore[assignment]  # a field, shadowing tuple.index
    first_line: int
    last_line: int


class Reject(NamedTuple):
    """A line that is not a valid request, with every problem found on it."""

    line: int
    custom_id: str | None
    problems: list[FieldProblem]
    raw: bytes  # the line, or its first KEEP_PREFIX_BYTES when `truncated`
    truncated: bool = False


class BlockSettings(NamedTuple):
    """What every block of one file is scanned with."""

    default_provider: str | None
    limits: dict[str, ShardLimits]
    max_line_bytes: int  # a longer line is rejected
    keep: bool = True  # keep the valid requests' bytes (False: only count them)
    spill_dir: str | None = None  # ... in one file per block there, rather than in memory


@dataclass
class BlockScan:
    """What scanning one block learned; `FileScan` merges these in file order.

    `id_hashes` and `id_lines` hold a 64-bit hash of each custom_id and its line (negative when
    the line was invalid anyway); hashes are only comparable between blocks scanned by one
    process or by workers of one pool (`hash` is salted per interpreter).
    """

    lines: int = 0
    blank: int = 0
    runs: list[GroupRun] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    id_hashes: array = field(default_factory=lambda: array("q"))
    id_lines: array = field(default_factory=lambda: array("i"))
    largest: list[tuple[int, int]] = field(default_factory=list)  # (size, -line), the largest
    unknown_keys: dict[str, int] = field(default_factory=dict)
    endpoint: str | None = None  # the file's endpoint once a line has set it


def scan_block(
    validator: LineValidator,
    settings: BlockSettings,
    block: bytes,
    first_line: int,
    endpoint: str | None,
    unterminated: bool,
) -> BlockScan:
    """Check every line of `block`, whose first line is line `first_line` of the file.

    `endpoint` is the file's endpoint as set by earlier lines (None: not yet); `unterminated`
    says the block is the file's last line, without a newline. The valid requests' bytes go
    where `settings` says: a spill file lets a worker hand over a name, not the bytes, through
    a pipe.
    """
    max_line_bytes = settings.max_line_bytes
    keep = settings.keep
    validator.endpoint = endpoint
    validator.unknown_keys = {}
    out = BlockScan()
    rejects = out.rejects
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    check = validator.check
    hashes_extend = out.id_hashes.extend
    lines_extend = out.id_lines.extend
    # Per group over the block: joined request pieces, sizes, custom_ids, lines.
    runs: dict[GroupKey, tuple[list[Part], array, list[str], list[int]]] = {}
    largest: list[tuple[int, int]] = [(-1, 0)] * LARGEST_LINES_KEPT
    watch = -1  # lines longer than this are among the largest so far, or over the cap
    line = first_line - 1
    for window in split_windows(block):
        # Requests are joined per window, while their bytes are still in the CPU cache.
        groups: dict[GroupKey, tuple[list[str], list[bytes], list[int]]] = {}
        for raw in window:
            line += 1
            size = len(raw)
            if size > watch:
                if size > largest[0][0]:
                    heapq.heapreplace(largest, (size, -line))
                watch = min(largest[0][0], max_line_bytes)
                if size > max_line_bytes:
                    rejects.append(oversize_reject(line, size, raw, max_line_bytes))
                    continue
            try:
                obj = loads(raw)
            except decode_error as exc:
                if raw.strip():
                    reason = utf8_error_reason(raw) or json_error_reason(raw, exc, unterminated)
                    rejects.append(Reject(line, None, [(None, reason)], raw))
                else:
                    out.blank += 1
                continue
            checked = check(obj)
            if type(checked) is not tuple:
                problems = cast(list[FieldProblem], checked)
                problems.extend(strict_problems(raw))
                _invalid(out, line, obj, problems, raw)
                continue
            custom_id, route, payload = checked
            expected = len(payload) + route.shrink
            if expected != size and not _canonical_crlf(raw, expected):
                strict = strict_problems(raw)
                if strict:
                    _invalid(out, line, obj, strict, raw)
                    continue
            group = groups.get(route.key)
            if group is None:
                group = groups[route.key] = ([], [], [])
            group[0].append(custom_id)
            group[1].append(payload)
            group[2].append(line)
        for key, (ids, payloads, numbers) in groups.items():
            run = runs.get(key)
            if run is None:
                run = runs[key] = ([], array("I"), [], [])
            run[1].extend(map(len, payloads))
            if keep:
                payloads.append(b"")
                run[0].append(b"\n".join(payloads))
            run[2].extend(ids)
            run[3].extend(numbers)
            hashes_extend(map(hash, ids))
            lines_extend(numbers)
    out.lines = line - first_line + 1
    for key, (pieces, sizes, ids, numbers) in runs.items():
        count = len(ids)
        out.runs.append(
            GroupRun(
                key=key,
                count=count,
                size=sum(sizes) + count,
                sizes=sizes,
                parts=pieces,
                index=orjson.dumps({"custom_ids": ids, "lines": numbers}) + b"\n",
                first_line=numbers[0],
                last_line=numbers[-1],
            )
        )
    if settings.spill_dir is not None and out.runs and keep:
        spill = os.path.join(settings.spill_dir, f"block-{first_line:012d}.jsonl")
        out.runs = _spill(out.runs, spill)
    out.largest = [entry for entry in largest if entry[0] >= 0]
    out.unknown_keys = validator.unknown_keys
    out.endpoint = validator.endpoint
    return out


def _spill(runs: list[GroupRun], path: str) -> list[GroupRun]:
    """Write the runs' bytes to a new file at path; the runs then point into it."""
    spilled = []
    offset = 0
    with open(path, "xb") as out:
        out.write(b"".join(cast(bytes, piece) for run in runs for piece in run.parts))
    for run in runs:
        spilled.append(run._replace(parts=[(path, offset, run.size)]))
        offset += run.size
    return spilled


def _invalid(
    out: BlockScan, line: int, obj: object, problems: list[FieldProblem], raw: bytes
) -> None:
    """Reject a parsed line; its custom_id still counts for duplicate detection."""
    custom_id = custom_id_of(obj)
    if custom_id is not None:
        out.id_hashes.append(hash(custom_id))
        out.id_lines.append(-line)
    out.rejects.append(Reject(line, custom_id, problems, raw))


def oversize_reject(line: int, size: int, start: bytes, max_line_bytes: int) -> Reject:
    """The reject of a line over the cap, known by its size and (at least) its first bytes."""
    reason = (
        f"line is {size:,} bytes, over the largest per-request limit ({max_line_bytes:,} bytes)"
    )
    prefix = start[:KEEP_PREFIX_BYTES]
    return Reject(line, None, [(None, reason)], prefix, truncated=size > len(prefix))


def _canonical_crlf(raw: bytes, expected: int) -> bool:
    """True when the only difference from a canonical line is a CRLF line ending."""
    return len(raw) == expected + 1 and raw.endswith(b"\r")


def custom_id_of(obj: object) -> str | None:
    """The line's custom_id when it is a non-empty string (the ones duplicates are judged on)."""
    if type(obj) is dict:
        custom_id = obj.get("custom_id")
        if type(custom_id) is str and custom_id:
            return custom_id
    return None
