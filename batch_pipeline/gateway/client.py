"""BifrostClient: the typed API of Bifrost's /v1/files and /v1/batches routes, one method each.

Ids are percent-encoded into paths (Gemini `batches/x`, Bedrock ARNs). Idempotent calls (GET,
list, delete, cancel, content, results) are retried by the session, and so is an upload: at
worst a retry leaves an unused file behind (it costs only storage, never a batch). A create is
sent exactly once: a blind retry could pay for a batch twice. How a call is sent, retried and
turned into an error lives in session.py.
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson

from batch_pipeline.gateway.config import Timeouts
from batch_pipeline.gateway.errors import (
    GatewayConnectionError,
    GatewayError,
    GatewayTransportError,
)
from batch_pipeline.gateway.inline_body import InlineRequestsBody
from batch_pipeline.gateway.models import (
    BatchCancelResponse,
    BatchCreateRequest,
    BatchCreateResponse,
    BatchListResponse,
    BatchRequestItem,
    BatchResultsResponse,
    BatchRetrieveResponse,
    FileDeleteResponse,
    FileListResponse,
    FileObject,
    FileRetrieveResponse,
    FileUploadResponse,
)
from batch_pipeline.gateway.session import GatewaySession
from batch_pipeline.providers import split_model

ListedT = TypeVar("ListedT", FileObject, BatchRetrieveResponse)


def encode_id(object_id: str) -> str:
    """An id as one path segment: `/` and every other reserved character percent-encoded."""
    return quote(object_id, safe="")


class BifrostClient:
    """Typed access to one Bifrost gateway. Thread-safe; use as a context manager or call close()."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        virtual_key: str | None = None,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen dataclass, safe as a default
        max_retry_seconds: float = 60.0,
        verify: bool | str = True,
        allow_insecure_http: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._session = GatewaySession(
            base_url,
            api_key=api_key,
            virtual_key=virtual_key,
            timeouts=timeouts,
            max_retry_seconds=max_retry_seconds,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            transport=transport,
        )
        self.base_url = self._session.base_url
        self.timeouts = timeouts

    def __repr__(self) -> str:
        return f"BifrostClient(base_url={self.base_url!r})"

    def __enter__(self) -> BifrostClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    # ----------------------------------------------------------------------------------- files

    def upload_file(
        self, path: Path, *, provider: str, purpose: str = "batch", filename: str | None = None
    ) -> FileUploadResponse:
        """Upload a file as multipart/form-data, streamed from disk; retried like a read (each
        attempt re-sends the whole file), since a retry can at worst leave an unused file.
        A file that cannot be opened raises OSError before anything is sent."""
        path = Path(path)
        name = filename or path.name
        content_type = "application/jsonl" if name.endswith(".jsonl") else _guess_content_type(name)
        with path.open("rb") as handle:

            def body() -> dict[str, Any]:
                handle.seek(0)
                return {
                    "files": {"file": (name, handle, content_type)},
                    "data": {"purpose": purpose},
                }

            return self._session.json(
                "POST",
                "/v1/files",
                FileUploadResponse,
                request_type="file_upload",
                provider=provider,
                body=body,
            )

    def retrieve_file(self, file_id: str, *, provider: str) -> FileUploadResponse:
        """Metadata of one stored file."""
        return self._session.json(
            "GET",
            f"/v1/files/{encode_id(file_id)}",
            FileRetrieveResponse,
            request_type="file_retrieve",
            provider=provider,
        )

    def list_files(
        self,
        *,
        provider: str,
        purpose: str | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Iterator[FileObject]:
        """Every stored file, following the `after` cursor page by page (each id once)."""
        params = _drop_none({"purpose": purpose, "limit": limit, "order": order})

        def page(cursor: str | None) -> tuple[list[FileObject], str | None, bool]:
            answer = self._session.json(
                "GET",
                "/v1/files",
                FileListResponse,
                request_type="file_list",
                provider=provider,
                params=_drop_none({**params, "after": cursor}),
            )
            return answer.data, answer.after, answer.has_more

        return _paginate(page)

    def delete_file(self, file_id: str, *, provider: str) -> FileDeleteResponse:
        """Delete a stored file (retried: deleting twice is harmless, the second may 404)."""
        return self._session.json(
            "DELETE",
            f"/v1/files/{encode_id(file_id)}",
            FileDeleteResponse,
            request_type="file_delete",
            provider=provider,
        )

    def download_file_content(
        self, file_id: str, *, provider: str, dest: Path, durable: bool = True
    ) -> int:
        """Stream a file's raw bytes to `dest` atomically (temp file + rename); returns the size.
        A connection broken mid-body restarts the download from scratch. `durable=False` skips
        the fsync, for a scratch copy that is read once and deleted."""
        return self._session.download(
            f"/v1/files/{encode_id(file_id)}/content",
            request_type="file_content",
            provider=provider,
            dest=Path(dest),
            accept="*/*",
            durable=durable,
        )

    # --------------------------------------------------------------------------------- batches

    def create_batch(
        self,
        *,
        model: str | None,
        endpoint: str,
        input_file_id: str | None = None,
        requests: list[dict[str, Any]] | None = None,
        requests_jsonl: Path | None = None,
        input_blob: str | None = None,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        provider: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> BatchCreateResponse:
        """Create a batch from an uploaded file, a list of inline requests, a JSONL file of
        inline requests streamed into the body, or an Azure blob; `extra` are the provider's own
        top-level fields (Bedrock's `role_arn` and `output_s3_uri`, `output_folder`, ...). Sent
        exactly once, never retried: on a GatewayTransportError with `request_sent` the batch may
        or may not exist. Raises ValueError when not exactly one input is given or provider and
        model disagree."""
        sources = [
            s for s in (input_file_id, requests, requests_jsonl, input_blob) if s is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one of input_file_id, requests, requests_jsonl, input_blob"
            )
        provider = _create_provider(model, provider)
        fields = BatchCreateRequest(
            model=model,
            input_file_id=input_file_id,
            input_blob=input_blob,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
        ).model_dump(mode="json", exclude_none=True)
        fields.update(extra or {})
        if requests is not None:
            for item in requests:
                BatchRequestItem.model_validate(item)
            fields["requests"] = requests  # sent verbatim: request bodies may carry nulls

        if requests_jsonl is not None:
            stream = InlineRequestsBody(fields, Path(requests_jsonl))

            def body() -> dict[str, Any]:
                return {
                    "content": iter(stream),
                    "headers": {
                        "content-type": "application/json",
                        "content-length": str(stream.content_length),
                    },
                }
        else:
            payload = orjson.dumps(fields)

            def body() -> dict[str, Any]:
                return {"content": payload, "headers": {"content-type": "application/json"}}

        return self._session.json(
            "POST",
            "/v1/batches",
            BatchCreateResponse,
            request_type="batch_create",
            provider=provider,
            retryable=False,
            body=body,
        )

    def retrieve_batch(
        self, batch_id: str, *, provider: str, deadline: float | None = None
    ) -> BatchRetrieveResponse:
        """The current state of one batch; with a `deadline` (time.monotonic()), the call and
        its retries end by then (a GatewayTimeoutError), whatever the gateway's latency."""
        return self._session.json(
            "GET",
            f"/v1/batches/{encode_id(batch_id)}",
            BatchRetrieveResponse,
            request_type="batch_retrieve",
            provider=provider,
            deadline=deadline,
        )

    def retrieve_batches(
        self, refs: Iterable[tuple[str, str]], *, max_workers: int = 16
    ) -> dict[str, BatchRetrieveResponse | GatewayError]:
        """Retrieve many (batch_id, provider) pairs concurrently over this client's pool.
        Keyed by batch id; a batch that could not be retrieved maps to its GatewayError.

        Once one retrieve has given up for want of an answer (the gateway unreachable, after its
        retries), the others still waiting are not sent: they map to a GatewayConnectionError
        with `request_sent=False`, so a sweep against a dead gateway ends in one retry budget."""
        unreachable = threading.Event()

        def one(ref: tuple[str, str]) -> tuple[str, BatchRetrieveResponse | GatewayError]:
            batch_id, provider = ref
            if unreachable.is_set():
                path = f"/v1/batches/{encode_id(batch_id)}"
                return batch_id, GatewayConnectionError(
                    "GET",
                    path,
                    "not sent: the gateway did not answer this sweep",
                    request_sent=False,
                )
            try:
                return batch_id, self.retrieve_batch(batch_id, provider=provider)
            except GatewayTransportError as error:
                unreachable.set()
                return batch_id, error
            except GatewayError as error:
                return batch_id, error

        unique = list(dict.fromkeys(refs))
        if not unique:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(unique)))) as pool:
            return dict(pool.map(one, unique))

    def list_batches(
        self, *, provider: str, limit: int | None = None
    ) -> Iterator[BatchRetrieveResponse]:
        """Every batch of a provider, following `next_cursor` via `after` (each id once); stops
        when `has_more` is false or a page brings nothing new (some providers ignore the cursor)."""

        def page(cursor: str | None) -> tuple[list[BatchRetrieveResponse], str | None, bool]:
            answer = self._session.json(
                "GET",
                "/v1/batches",
                BatchListResponse,
                request_type="batch_list",
                provider=provider,
                params=_drop_none({"limit": limit, "after": cursor}),
            )
            return answer.data, answer.next_cursor, answer.has_more

        return _paginate(page)

    def cancel_batch(self, batch_id: str, *, provider: str) -> BatchCancelResponse:
        """Ask the provider to cancel a batch (retried: cancelling twice is harmless)."""
        return self._session.json(
            "POST",
            f"/v1/batches/{encode_id(batch_id)}/cancel",
            BatchCancelResponse,
            request_type="batch_cancel",
            provider=provider,
        )

    def batch_results(self, batch_id: str, *, provider: str) -> BatchResultsResponse:
        """All result items of a finished batch from the results endpoint (one response)."""
        return self._session.json(
            "GET",
            f"/v1/batches/{encode_id(batch_id)}/results",
            BatchResultsResponse,
            request_type="batch_results",
            provider=provider,
        )

    def download_batch_results(
        self, batch_id: str, *, provider: str, dest: Path, durable: bool = True
    ) -> int:
        """Save the results endpoint's answer to `dest` without holding it in memory (atomic,
        restarted on a broken connection); read it with iter_result_items(dest). `durable=False`
        skips the fsync, as for download_file_content."""
        return self._session.download(
            f"/v1/batches/{encode_id(batch_id)}/results",
            request_type="batch_results",
            provider=provider,
            dest=Path(dest),
            accept="application/json",
            durable=durable,
        )


def _paginate(
    fetch: Callable[[str | None], tuple[list[ListedT], str | None, bool]],
) -> Iterator[ListedT]:
    """Yield each item once across pages; stop when there is no further cursor, a cursor repeats,
    or a page holds only items already seen (a gateway that ignores the cursor)."""
    seen_ids: set[str] = set()
    seen_cursors: set[str] = set()
    cursor: str | None = None
    while True:
        items, next_cursor, has_more = fetch(cursor)
        fresh = 0
        for item in items:
            if item.id not in seen_ids:
                seen_ids.add(item.id)
                fresh += 1
                yield item
        if not has_more or not next_cursor or next_cursor in seen_cursors:
            return
        if items and not fresh:
            return
        seen_cursors.add(next_cursor)
        cursor = next_cursor


def _create_provider(model: str | None, provider: str | None) -> str:
    """The provider of a create: explicit, or the prefix of `provider/model`."""
    parts = split_model(model) if model else None
    prefix = parts[0] if parts else None
    if provider and prefix and provider != prefix:
        raise ValueError(f"provider {provider!r} does not match model {model!r}")
    chosen = provider or prefix
    if not chosen:
        raise ValueError("give model as 'provider/model' or name the provider")
    return chosen


def _guess_content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
