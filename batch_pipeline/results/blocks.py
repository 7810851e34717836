"""JSONL read in blocks of whole lines: one buffer plus line offsets, the unit of columnar work.

A block holds about BLOCK_BYTES of complete lines (a longer line makes a block of its own), so
memory is bounded by the block size and the longest line, whatever the size of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
import pyarrow as pa

BLOCK_BYTES = 8 * 1024 * 1024
_NEWLINE = 10


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Consecutive lines of one file: line i is data[starts[i]:ends[i]], without its newline.

    `first_number` is the 1-based line number of the first line in its file; `utf8` says the
    whole block is valid UTF-8 (else each line is checked on its own where it matters).
    """

    data: pa.Buffer
    starts: np.ndarray
    ends: np.ndarray
    first_number: int
    utf8: bool

    def __len__(self) -> int:
        return len(self.starts)

    def line(self, index: int) -> bytes:
        """Line `index` of the block as bytes, without its newline."""
        return self.data[int(self.starts[index]) : int(self.ends[index])].to_pybytes()

    def lines(self) -> pa.BinaryArray:
        """Every line as a binary array over the block's buffer (no copy); each value keeps
        its newline, except maybe the last line's."""
        count = len(self.starts)
        offsets = np.empty(count + 1, dtype=np.int32)
        offsets[:count] = self.starts
        offsets[count] = self.ends[-1] + 1 if count and self._ends_with_newline() else self.end
        return pa.Array.from_buffers(pa.binary(), count, [None, pa.py_buffer(offsets), self.data])

    @property
    def end(self) -> int:
        """Where the last line ends (its newline excluded)."""
        return int(self.ends[-1]) if len(self.ends) else 0

    def _ends_with_newline(self) -> bool:
        return self.data.size > self.end


def _make_block(data: bytes | bytearray | memoryview, first_number: int) -> LineBlock:
    """Index the lines of `data`, which ends at a line end (a newline, or the end of input)."""
    buffer = pa.py_buffer(data)
    array = np.frombuffer(buffer, dtype=np.uint8)
    newlines = np.flatnonzero(array == _NEWLINE)
    size = len(array)
    has_tail = size > 0 and (len(newlines) == 0 or newlines[-1] != size - 1)
    count = len(newlines) + (1 if has_tail else 0)
    starts = np.empty(count, dtype=np.int64)
    ends = np.empty(count, dtype=np.int64)
    if count:
        starts[0] = 0
        starts[1:] = newlines[: count - 1] + 1
        ends[: len(newlines)] = newlines
        if has_tail:
            ends[-1] = size
    return LineBlock(buffer, starts, ends, first_number, _is_utf8(buffer))


def _is_utf8(buffer: pa.Buffer) -> bool:
    """True when the whole buffer is valid UTF-8 (one vectorized check)."""
    whole = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(np.array([0, buffer.size], np.int32)), buffer]
    )
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def read_blocks(handle: IO[bytes], block_bytes: int | None = None) -> Iterator[LineBlock]:
    """The lines of a binary stream in blocks of about `block_bytes` (BLOCK_BYTES), split at
    line ends."""
    block_bytes = block_bytes or BLOCK_BYTES
    carry = b""
    number = 1
    while True:
        buffer = bytearray(len(carry) + block_bytes)
        buffer[: len(carry)] = carry
        view = memoryview(buffer)
        filled = len(carry)
        while filled < len(buffer):
            got = handle.readinto(view[filled:])  # type: ignore[attr-defined]
            if not got:
                break
            filled += got
        eof = filled < len(buffer)
        if eof:
            cut = filled
        else:
            cut = buffer.rfind(b"\n", 0, filled) + 1
            if cut == 0:  # one line longer than the block: read on until its end
                carry = bytes(view[:filled])
                block_bytes *= 2
                continue
        carry = bytes(view[cut:filled])
        view.release()
        if cut:
            block = _make_block(memoryview(buffer)[:cut], number)
            number += len(block)
            yield block
        if eof:
            return


def blocks_of_lines(
    lines: Iterable[bytes | str], block_bytes: int | None = None
) -> Iterator[LineBlock]:
    """Blocks of the given lines, numbered from 1: each item is one line (its newline optional,
    a newline inside it kept as part of the line)."""
    block_bytes = block_bytes or BLOCK_BYTES
    pending: list[bytes] = []
    size = 0
    number = 1
    for line in lines:
        data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\n"
        pending.append(data)
        size += len(data)
        if size >= block_bytes:
            yield _joined(pending, number)
            number += len(pending)
            pending, size = [], 0
    if pending:
        yield _joined(pending, number)


def _joined(lines: list[bytes], first_number: int) -> LineBlock:
    """A block of lines that each end with a newline."""
    ends = np.cumsum(np.fromiter((len(x) for x in lines), dtype=np.int64, count=len(lines)))
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    buffer = pa.py_buffer(b"".join(lines))
    return LineBlock(buffer, starts, ends - 1, first_number, _is_utf8(buffer))
