"""Azure Blob Storage's Put, Get and Delete Blob, for batches that read their input from a blob.

Azure batches behind Bifrost may take `input_blob` + `output_folder` instead of an uploaded
file; the pipeline puts each shard as a blob and reads the error blob itself (Bifrost's
/results reads only the output blob). Requests are authenticated by a SAS token that is added to
the query string by the transport, below httpx's client, so it reaches no URL we log, no repr
and no exception; messages name blobs by their URL without a query. An endpoint override maps
`https://ACCOUNT.blob.core.windows.net` to another base (Azurite, the emulator).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
from pydantic import SecretStr

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.gateway.config import Timeouts, is_loopback_host, ssl_verification
from batch_pipeline.gateway.errors import one_line
from batch_pipeline.gateway.retry import RetryPolicy, parse_retry_after
from batch_pipeline.providers import azure_blob_url_problem

API_VERSION = "2023-11-03"  # x-ms-version sent with every call
RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
ERROR_BODY_LIMIT = 16 * 1024
ResultT = TypeVar("ResultT")


class BlobStorageError(BatchPipelineError):
    """Base of what the blob client raises; `retryable` says whether trying again may help."""

    retryable: bool = False


class BlobConfigError(BlobStorageError):
    """The blob client cannot be used as configured (URL, endpoint, token); nothing was sent."""


class BlobTransportError(BlobStorageError):
    """No HTTP answer arrived (timeout, refused or broken connection)."""

    retryable = True


class BlobStatusError(BlobStorageError):
    """Blob storage answered with a non-2xx status; `code` is its x-ms-error-code."""

    def __init__(
        self,
        method: str,
        url: str,
        status_code: int,
        code: str,
        message: str,
        retry_after: float | None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after
        self.retryable = status_code in RETRYABLE_STATUS_CODES
        super().__init__(f"{method} {url}: HTTP {status_code} {code}: {message}")


class AzureBlobClient:
    """Put, get and delete blobs by their `https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`
    URL. Every call is idempotent and retried with backoff within `max_retry_seconds`."""

    def __init__(
        self,
        *,
        sas_token: str | None,
        endpoint: str | None = None,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen dataclass, safe as a default
        max_retry_seconds: float = 60.0,
        verify: bool | str = True,
    ) -> None:
        self._endpoint = _checked_endpoint(endpoint) if endpoint else None
        token = _checked_token(sas_token)
        self.retry = RetryPolicy(max_total_seconds=max_retry_seconds)
        self.sleep: Callable[[float], None] = time.sleep
        local = self._endpoint is not None and is_loopback_host(self._endpoint.host)
        inner = httpx.HTTPTransport(
            verify=False if local else ssl_verification(verify), trust_env=not local
        )
        self._signer = _SasTransport(inner, token)
        self._http = httpx.Client(
            transport=self._signer,
            timeout=timeouts.as_httpx(),
            follow_redirects=False,
            trust_env=not local,
            headers={"x-ms-version": API_VERSION, "user-agent": "batch-pipeline (httpx)"},
        )

    def __repr__(self) -> str:
        return f"AzureBlobClient(endpoint={str(self._endpoint) if self._endpoint else None!r})"

    def __enter__(self) -> AzureBlobClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def put_blob(self, url: str, source: Path, *, content_type: str = "application/jsonl") -> int:
        """Put Blob: `source` streamed from disk as a block blob at `url` (replacing any blob
        there, so putting the same content again is harmless); returns its size."""
        target = self._target(url)
        size = Path(source).stat().st_size

        def attempt() -> int:
            with open(source, "rb") as body:
                headers = {
                    "x-ms-blob-type": "BlockBlob",
                    "content-type": content_type,
                    "content-length": str(size),
                }
                request = self._http.build_request("PUT", target, headers=headers, content=body)
                response = self._http.send(request)
                self._check(response, "PUT", url)
            return size

        return self._retrying("PUT", url, attempt)

    def get_blob(self, url: str, dest: Path) -> int:
        """Get Blob: the blob's bytes streamed into `dest` atomically (temp file + rename, a
        broken download restarts); returns the size."""
        target, dest = self._target(url), Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> int:
            with self._http.stream("GET", target) as response:
                self._check(response, "GET", url)
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
                        size = out.tell()
                    os.replace(tmp, dest)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            return size

        return self._retrying("GET", url, attempt)

    def delete_blob(self, url: str) -> bool:
        """Delete Blob, with its snapshots; False when there was no blob at `url` (deleted
        before, or never written), so deleting again is harmless."""
        target = self._target(url)

        def attempt() -> bool:
            headers = {"x-ms-delete-snapshots": "include"}
            response = self._http.request("DELETE", target, headers=headers)
            if response.status_code == 404:
                return False
            self._check(response, "DELETE", url)
            return True

        return self._retrying("DELETE", url, attempt)

    def _target(self, url: str) -> httpx.URL:
        """Where a blob URL is sent: itself, or its path under the endpoint override."""
        problem = azure_blob_url_problem(url)
        if problem:
            raise BlobConfigError(f"{url.split('?', 1)[0]}: {problem}")
        real = httpx.URL(url)
        if self._endpoint is None:
            return real
        return self._endpoint.copy_with(
            raw_path=self._endpoint.raw_path.rstrip(b"/") + real.raw_path
        )

    def _check(self, response: httpx.Response, method: str, url: str) -> None:
        """Raise a one-line BlobStatusError for a non-2xx answer (its code and first message
        line from Azure's XML, the token redacted)."""
        if response.is_success:
            return
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
        text = bytes(body[:ERROR_BODY_LIMIT]).decode("utf-8", "replace")
        code = response.headers.get("x-ms-error-code") or _xml_field(text, "Code") or "-"
        message = _xml_field(text, "Message") or response.reason_phrase or "no message"
        raise BlobStatusError(
            method,
            url,
            response.status_code,
            code,
            one_line(self._redact(message.split("\n", 1)[0])),
            parse_retry_after(response.headers.get("retry-after")),
        )

    def _retrying(self, method: str, url: str, attempt: Callable[[], ResultT]) -> ResultT:
        """Run `attempt` until it succeeds, fails for good or the retry budget is spent."""
        started, tries = time.monotonic(), 0
        while True:
            tries += 1
            try:
                return attempt()
            except BlobStatusError as exc:
                error: BlobStorageError = exc
                wait = exc.retry_after
            except httpx.TransportError as exc:
                reason = self._redact(str(exc)) or type(exc).__name__
                error = BlobTransportError(
                    f"{method} {url}: {type(exc).__name__}: {one_line(reason)}"
                )
                wait = None
            delay = wait if wait is not None else self.retry.backoff(tries)
            if (
                not error.retryable
                or time.monotonic() - started + delay > self.retry.max_total_seconds
            ):
                raise error from None
            self.sleep(delay)

    def _redact(self, text: str) -> str:
        return self._signer.redact(text)


class _SasTransport(httpx.BaseTransport):
    """Adds the SAS token to each request's query on its way out, so the client's own request
    (what httpx logs and attaches to errors) never carries it."""

    def __init__(self, inner: httpx.BaseTransport, token: SecretStr | None) -> None:
        self._inner = inner
        self._token = token

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._token is None:
            return self._inner.handle_request(request)
        signed = httpx.Request(
            request.method,
            request.url.copy_with(query=self._token.get_secret_value().encode()),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return self._inner.handle_request(signed)

    def redact(self, text: str) -> str:
        """`text` with the token (and its signature alone) replaced by ***."""
        if self._token is None:
            return text
        token = self._token.get_secret_value()
        text = text.replace(token, "***")
        for part in token.split("&"):
            if part.startswith("sig=") and len(part) > 12:  # too short to be mistaken for text
                text = text.replace(part[4:], "***")
        return text

    def close(self) -> None:
        self._inner.close()


def _checked_token(token: str | None) -> SecretStr | None:
    """A SAS token usable as a query string (a leading `?` is dropped); errors never repeat it."""
    if token is None:
        return None
    token = token.strip().removeprefix("?")
    if "sig=" not in token or any(
        ch.isspace() or ch == "#" or not ch.isprintable() for ch in token
    ):
        raise BlobConfigError(
            "the SAS token is not a query string with a signature (sv=...&sig=...)"
        )
    return SecretStr(token)


def _checked_endpoint(endpoint: str) -> httpx.URL:
    """The override base: http(s), no query; plain http only on loopback (the token travels in
    the URL)."""
    try:
        url = httpx.URL(endpoint.strip())
    except httpx.InvalidURL as exc:
        raise BlobConfigError(f"azure_blob_endpoint {endpoint!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host or url.query or url.userinfo:
        raise BlobConfigError(
            f"azure_blob_endpoint {endpoint!r} must look like http://127.0.0.1:10000/ACCOUNT "
            "(no query, no user:password)"
        )
    if url.scheme == "http" and not is_loopback_host(url.host):
        raise BlobConfigError(
            f"azure_blob_endpoint {endpoint!r}: plain http is allowed on loopback only"
        )
    return url


def _xml_field(text: str, tag: str) -> str | None:
    """The text of the first <tag> element of an Azure error body, if any."""
    start = text.find(f"<{tag}>")
    end = text.find(f"</{tag}>", start)
    return text[start + len(tag) + 2 : end].strip() if 0 <= start < end else None
