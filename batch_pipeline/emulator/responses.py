"""HTTP answers: JSON bodies with Bifrost's `extra_fields`, and streamed file downloads that a
fault can cut mid-body."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from batch_pipeline.emulator.errors import ApiError

DOWNLOAD_CHUNK = 64 * 1024


class ConnectionCut(Exception):
    """Raised after a partial body so uvicorn drops the connection (reset_download fault)."""


class QuietCuts(logging.Filter):
    """Keeps the deliberate connection cuts out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, ConnectionCut):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(data), status, headers=headers, media_type="application/json")


def latency_ms(started: float) -> int:
    """Milliseconds since `started` (a perf_counter value), as Bifrost reports latency."""
    return int((time.perf_counter() - started) * 1000)


def envelope(body: dict[str, Any], request_type: str, provider: str, started: float) -> Response:
    """A success body with Bifrost's `extra_fields` (request_type, provider, latency, chunk_index)."""
    extra = dict(body.pop("extra_fields", None) or {})
    extra.update(
        {
            "request_type": request_type,
            "provider": provider,
            "latency": latency_ms(started),
            "chunk_index": 0,
        }
    )
    return json_response({**body, "extra_fields": extra})


def error_response(exc: ApiError, request_type: str | None, provider: str | None) -> Response:
    """A BifrostError answer."""
    return json_response(exc.body(request_type, provider), exc.http_status, exc.headers)


class FileDownload(Response):
    """Streams a file from disk in chunks; with `cut_after` the connection drops after that many
    bytes; with `stall` = (after_bytes, seconds) the body pauses once, then completes."""

    def __init__(
        self,
        path: Path,
        cut_after: int | None = None,
        *,
        stall: tuple[int, float] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.cut_after = None if cut_after is None else min(cut_after, max(self.size - 1, 0))
        self.stall = stall
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", (content_type or "application/octet-stream").encode()),
            (b"content-length", str(self.size).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        sent = 0
        stall_at, stall_seconds = self.stall if self.stall is not None else (None, 0.0)
        async with await anyio.open_file(self.path, "rb") as source:
            while True:
                size = DOWNLOAD_CHUNK
                if stall_at is not None:
                    if sent >= stall_at:
                        await anyio.sleep(stall_seconds)
                        stall_at = None
                    else:
                        size = min(size, stall_at - sent)
                chunk = await source.read(size)
                if self.cut_after is not None and sent + len(chunk) >= self.cut_after:
                    partial = chunk[: self.cut_after - sent]
                    if partial:
                        await send(
                            {"type": "http.response.body", "body": partial, "more_body": True}
                        )
                    raise ConnectionCut(
                        f"download of {self.path.name} cut after {self.cut_after} bytes"
                    )
                if not chunk:
                    break
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
