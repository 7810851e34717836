"""Large uploads, inline creates and downloads stream: client memory does not grow with file size.

The far end is an httpx transport that consumes or produces the body chunk by chunk and keeps
nothing (MockTransport would read the whole request first), so tracemalloc's peak measures the
client alone.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from batch_pipeline.gateway import BifrostClient

FILE_BYTES = 24 * 1024 * 1024
PEAK_LIMIT = 4 * 1024 * 1024


def write_requests(path: Path, size: int) -> int:
    """A JSONL file of about `size` bytes; returns its line count."""
    line_template = '{"custom_id":"r%07d","params":{"max_tokens":16,"messages":[{"role":"user","content":"%s"}]}}\n'
    filler = "x" * 400
    count = 0
    with path.open("w") as out:
        written = 0
        while written < size:
            line = line_template % (count, filler)
            out.write(line)
            written += len(line)
            count += 1
    return count


def peak_bytes(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class DrainingTransport(httpx.BaseTransport):
    """Counts the request body chunk by chunk, keeps none of it, answers `answer`."""

    def __init__(self, answer: dict) -> None:
        self.answer = answer
        self.seen: dict[str, int] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        total = 0
        for chunk in request.stream:
            total += len(chunk)
        self.seen = {"bytes": total, "declared": int(request.headers["content-length"])}
        return httpx.Response(200, json=self.answer)


@pytest.fixture(scope="module")
def big_requests(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("big") / "requests.jsonl"
    return path, write_requests(path, FILE_BYTES)


def test_upload_streams_from_disk(big_requests: tuple[Path, int]) -> None:
    path, _ = big_requests
    transport = DrainingTransport({"id": "file-1", "bytes": path.stat().st_size})
    client = BifrostClient("http://127.0.0.1:1", transport=transport)
    peak = peak_bytes(lambda: client.upload_file(path, provider="openai"))
    assert transport.seen["bytes"] == transport.seen["declared"] > path.stat().st_size
    assert peak < PEAK_LIMIT, peak


def test_inline_create_streams_the_requests_file(big_requests: tuple[Path, int]) -> None:
    path, _ = big_requests
    transport = DrainingTransport({"id": "msgbatch_1", "status": "in_progress"})
    client = BifrostClient("http://127.0.0.1:1", transport=transport)
    peak = peak_bytes(
        lambda: client.create_batch(
            model="anthropic/claude-3-5-haiku-latest", endpoint="/v1/messages", requests_jsonl=path
        )
    )
    assert transport.seen["bytes"] == transport.seen["declared"] > path.stat().st_size
    assert peak < PEAK_LIMIT, peak


def test_inline_create_body_is_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    count = write_requests(path, 50_000)
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return httpx.Response(200, json={"id": "msgbatch_1", "status": "in_progress"})

    client = BifrostClient("http://127.0.0.1:1", transport=httpx.MockTransport(handler))
    client.create_batch(
        model="anthropic/claude-3-5-haiku-latest",
        endpoint="/v1/messages",
        requests_jsonl=path,
        metadata={"shard": "s1"},
    )
    body = json.loads(bodies[0])
    assert len(body["requests"]) == count
    assert body["requests"][0]["custom_id"] == "r0000000"
    assert body["metadata"] == {"shard": "s1"}
    assert body["model"] == "anthropic/claude-3-5-haiku-latest"


class Generated(httpx.SyncByteStream):
    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        chunk = b"y" * 65536
        left = self.size
        while left > 0:
            yield chunk[:left]
            left -= len(chunk)


def test_download_streams_to_disk(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Generated(FILE_BYTES))

    client = BifrostClient("http://127.0.0.1:1", transport=httpx.MockTransport(handler))
    dest = tmp_path / "output.jsonl"
    sizes: list[int] = []
    peak = peak_bytes(
        lambda: sizes.append(client.download_file_content("f", provider="openai", dest=dest))
    )
    assert sizes == [FILE_BYTES] and dest.stat().st_size == FILE_BYTES
    assert peak < PEAK_LIMIT, peak


@pytest.mark.parametrize(("durable", "fsyncs"), [(True, 1), (False, 0)])
def test_a_download_is_forced_to_disk_unless_it_is_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, fsyncs: int
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Generated(1000))

    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    client = BifrostClient("http://127.0.0.1:1", transport=httpx.MockTransport(handler))
    dest = tmp_path / "output.jsonl"
    assert client.download_file_content("f", provider="openai", dest=dest, durable=durable) == 1000
    assert len(synced) == fsyncs and dest.stat().st_size == 1000
