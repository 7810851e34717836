"""Read an input file as bounded batches of raw lines: gzip, BOM, CRLF and huge lines handled.

The file is read in fixed-size chunks and split on `\\n`; a line longer than `max_line_bytes` is
never held whole (only its first bytes are kept), so memory is bounded by the chunk size plus
that cap, whatever the file size. File-level defects (empty, zip, UTF-16, binary) are detected
on the first chunk and stop the read with one clear reason.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20
KEEP_PREFIX_BYTES = 64 * 1024
HASH_AHEAD_CHUNKS = 4  # chunks queued for the hashing thread at most (bounds memory)

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_FOREIGN_MAGIC = (
    (b"PK\x03\x04", "file is a zip archive, not JSONL (unzip it first)"),
    (b"PK\x05\x06", "file is an empty zip archive, not JSONL"),
    (b"\xff\xfe\x00\x00", "file is UTF-32 encoded; convert it to UTF-8"),
    (b"\x00\x00\xfe\xff", "file is UTF-32 encoded; convert it to UTF-8"),
    (b"\xff\xfe", "file is UTF-16 encoded; convert it to UTF-8"),
    (b"\xfe\xff", "file is UTF-16 encoded; convert it to UTF-8"),
    (b"BZh", "file is bzip2-compressed; only gzip (.jsonl.gz) is read"),
    (b"\xfd7zXZ\x00", "file is xz-compressed; only gzip (.jsonl.gz) is read"),
    (b"\x28\xb5\x2f\xfd", "file is zstd-compressed; only gzip (.jsonl.gz) is read"),
)


class OversizeLine:
    """A line too long to hold: its true size (as `len()`) and its first bytes."""

    __slots__ = ("prefix", "size")

    def __init__(self, prefix: bytes, size: int) -> None:
        self.prefix = prefix
        self.size = size

    def __len__(self) -> int:
        return self.size


@dataclass
class ReadState:
    """What the reader learned about the file as a whole while reading it."""

    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    bytes_read: int = 0
    bom: bool = False
    crlf: bool = False
    unterminated_last_line: bool = False
    fatal: str | None = None


class LineReader:
    """Iterate a file as lists of raw lines (bytes without `\\n`, or OversizeLine)."""

    def __init__(self, path: Path, max_line_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.chunk_bytes = chunk_bytes
        self.state = ReadState()

    def batches(self) -> Iterator[list[bytes | OversizeLine]]:
        """Yield lists of lines in file order; state is complete once the iterator ends.

        The content hash runs on a helper thread (hashlib releases the GIL on large buffers), in
        chunk order, so it costs the parsing thread almost nothing.
        """
        self._pending: deque[Future[None]] = deque()
        with self.path.open("rb") as raw, ThreadPoolExecutor(1) as self._hasher:
            head = raw.read(2)
            raw.seek(0)
            if head == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                    yield from self._split(unzipped)
            else:
                yield from self._split(raw)

    def _read(self, stream: BinaryIO) -> bytes:
        try:
            chunk = stream.read(self.chunk_bytes)
        except (OSError, EOFError, zlib.error) as exc:
            self.state.fatal = f"gzip data is corrupt or truncated ({exc})"
            return b""
        self._pending.append(self._hasher.submit(self.state.sha256.update, chunk))
        if len(self._pending) > HASH_AHEAD_CHUNKS:
            self._pending.popleft().result()
        self.state.bytes_read += len(chunk)
        return chunk

    def _split(self, stream: BinaryIO) -> Iterator[list[bytes | OversizeLine]]:
        state = self.state
        chunk = self._read(stream)
        if state.fatal:
            return
        if not chunk:
            state.fatal = "file is empty (no requests)"
            return
        state.fatal = _file_level_defect(chunk)
        if state.fatal:
            return
        if chunk.startswith(_UTF8_BOM):
            state.bom = True
            chunk = chunk[len(_UTF8_BOM) :]
        carry = b""
        oversize: OversizeLine | None = None
        cap = self.max_line_bytes
        while chunk:
            if not state.crlf and b"\r" in chunk and b"\r\n" in chunk:
                state.crlf = True
            if oversize is not None:
                end = chunk.find(b"\n")
                if end < 0:
                    oversize.size += len(chunk)
                    chunk = self._read(stream)
                    continue
                oversize.size += end
                yield [oversize]
                oversize = None
                chunk = chunk[end + 1 :]
                continue
            lines: list[bytes | OversizeLine] = (carry + chunk).split(b"\n")
            carry = lines.pop()  # type: ignore[assignment]
            if len(carry) > cap:
                oversize = OversizeLine(carry[:KEEP_PREFIX_BYTES], len(carry))
                carry = b""
            if lines:
                yield lines
            chunk = self._read(stream)
        if state.fatal:
            return
        if oversize is not None:
            state.unterminated_last_line = True
            yield [oversize]
        elif carry:
            state.unterminated_last_line = True
            yield [carry]


def _file_level_defect(head: bytes) -> str | None:
    """A reason the whole file cannot be JSONL, judged from its first chunk, or None."""
    for magic, reason in _FOREIGN_MAGIC:
        if head.startswith(magic):
            return reason
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"file looks binary (NUL byte at offset {nul}), not JSONL text"
    return None
