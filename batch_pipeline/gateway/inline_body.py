"""A POST /v1/batches body whose `requests` array is streamed from a JSONL file.

Two passes over the file: the first checks every line (so a bad line fails before anything is
sent, which matters because a create is never retried) and sums the exact body length; the second
streams the same bytes. Memory stays bounded by one line whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batch_pipeline.gateway.errors import RequestFileError

_BOM = b"\xef\xbb\xbf"
_CHUNK_BYTES = 64 * 1024


def _request_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, stripped line) for every non-blank line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.removeprefix(_BOM) if number == 1 else raw
            line = line.strip()
            if line:
                yield number, line


def _check_line(path: Path, number: int, line: bytes) -> None:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RequestFileError(str(path), number, f"not valid JSON ({exc})") from None
    if not isinstance(item, dict):
        raise RequestFileError(str(path), number, "not a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise RequestFileError(str(path), number, "custom_id missing or not a non-empty string")


class InlineRequestsBody:
    """The JSON object `fields` plus `"requests": [<each line of path>]`, as a byte stream."""

    def __init__(self, fields: dict[str, Any], path: Path) -> None:
        self.path = path
        self._head = orjson.dumps(fields)[:-1] + (b',"requests":[' if fields else b'"requests":[')
        self._tail = b"]}"
        self.count, self.content_length = self._scan()

    def _scan(self) -> tuple[int, int]:
        try:
            count = 0
            size = len(self._head) + len(self._tail)
            for number, line in _request_lines(self.path):
                _check_line(self.path, number, line)
                size += len(line) + (1 if count else 0)
                count += 1
        except OSError as exc:
            raise RequestFileError(str(self.path), None, f"cannot read: {exc.strerror}") from None
        if count == 0:
            raise RequestFileError(str(self.path), None, "no requests in the file")
        return count, size

    def __iter__(self) -> Iterator[bytes]:
        buffer = bytearray(self._head)
        for index, (_, line) in enumerate(_request_lines(self.path)):
            if index:
                buffer += b","
            buffer += line
            if len(buffer) >= _CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
        buffer += self._tail
        yield bytes(buffer)
