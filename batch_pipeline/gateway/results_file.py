"""Read a saved `/v1/batches/{id}/results` answer item by item, in bounded memory.

The results endpoint is not paginated: a 100,000-request batch comes back as one JSON document of
hundreds of megabytes. BifrostClient.download_batch_results streams it to disk; this module walks
its top-level object and yields each `results` element as it is decoded (json's C decoder does
the work, one value at a time), so memory is bounded by the largest single item.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from batch_pipeline.gateway.errors import ResultsFileError
from batch_pipeline.gateway.models import BatchResultItem

_CHUNK_CHARS = 64 * 1024
_WHITESPACE = " \t\r\n"
# A value ending (or failing) this close to the end of the buffer may just be cut by the chunking.
_EDGE_CHARS = 64


class _JsonCursor:
    """A position in a JSON text read lazily from a binary file."""

    def __init__(self, handle: IO[bytes], path: Path) -> None:
        self._handle = handle
        self._path = path
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._json = json.JSONDecoder()
        self._buffer = ""
        self._pos = 0
        self._consumed = 0
        self._eof = False

    def _fill(self) -> bool:
        """Read more text, at least as much as is pending (keeps re-decoding linear)."""
        if self._eof:
            return False
        self._consumed += self._pos
        pending = self._buffer[self._pos :]
        raw = self._handle.read(max(_CHUNK_CHARS, len(pending)))
        self._eof = not raw
        self._buffer = pending + self._decoder.decode(raw, final=self._eof)
        self._pos = 0
        return True

    def fail(self, reason: str) -> ResultsFileError:
        return ResultsFileError(str(self._path), self._consumed + self._pos, reason)

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file)."""
        while True:
            while self._pos < len(self._buffer) and self._buffer[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buffer) or not self._fill():
                return self._buffer[self._pos : self._pos + 1]

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            raise self.fail(f"expected {char!r}, found {found or 'end of file'!r}")
        self._pos += 1

    def skip(self, char: str) -> bool:
        """Consume `char` when it comes next."""
        if self.peek() == char:
            self._pos += 1
            return True
        return False

    def value(self) -> Any:
        """Decode the next complete JSON value."""
        self.peek()
        while True:
            edge = len(self._buffer) - _EDGE_CHARS
            try:
                value, end = self._json.raw_decode(self._buffer, self._pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= edge or exc.msg.startswith("Unterminated string")
                if cut and self._fill():
                    continue
                self._pos = exc.pos
                raise self.fail(f"invalid JSON ({exc.msg})") from None
            if end >= edge and self._fill():
                continue
            self._pos = end
            return value


def iter_result_items(path: Path) -> Iterator[BatchResultItem]:
    """Each element of the `results` array of a saved results answer, in file order."""
    path = Path(path)
    with path.open("rb") as handle:
        cursor = _JsonCursor(handle, path)
        cursor.expect("{")
        if cursor.skip("}"):
            return
        index = 0
        while True:
            key = cursor.value()
            if not isinstance(key, str):
                raise cursor.fail("object key is not a string")
            cursor.expect(":")
            if key == "results" and cursor.skip("["):
                while not cursor.skip("]"):
                    if index:
                        cursor.expect(",")
                    item = cursor.value()
                    try:
                        yield BatchResultItem.model_validate(item)
                    except ValidationError as exc:
                        raise cursor.fail(f"results[{index}] is not a result item: {exc}") from None
                    index += 1
            else:
                cursor.value()
            if cursor.skip(","):
                continue
            cursor.expect("}")
            return
