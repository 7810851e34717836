"""GatewaySession: how one gateway call is sent, retried, logged and turned into an error.

Every call names its provider both as `?provider=` and as the `x-model-provider` header (older
gateway builds read only the header) and has explicit timeouts. A retryable call re-sends on a
connection failure or 429/500/502/503/504 with jittered backoff, honouring Retry-After, within a
total time budget (the caller decides what is retryable). A call may carry a deadline (a monotonic
clock time): each attempt's timeouts are cut to the time left and no retry starts past it. Keys live in SecretStr and are added
per request; our own keys are scrubbed from any foreign text, so they reach no repr, log or error.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel, SecretStr, ValidationError

from batch_pipeline.gateway.config import (
    Timeouts,
    checked_base_url,
    checked_secret,
    is_loopback_host,
    ssl_verification,
)
from batch_pipeline.gateway.errors import (
    GatewayConnectionError,
    GatewayError,
    GatewayProtocolError,
    GatewayStatusError,
    GatewayTimeoutError,
    GatewayTLSError,
    GatewayTransportError,
    one_line,
    status_error_class,
)
from batch_pipeline.gateway.models import BifrostError, ErrorField
from batch_pipeline.gateway.retry import RetryPolicy, parse_retry_after

logger = logging.getLogger("batch_pipeline.gateway")

ModelT = TypeVar("ModelT", bound=BaseModel)
ResultT = TypeVar("ResultT")
Body = Callable[[], dict[str, Any]]

ERROR_BODY_LIMIT = 64 * 1024
USER_AGENT = "batch-pipeline (httpx)"
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class GatewaySession:
    """The HTTP side of BifrostClient: one pooled httpx.Client, credentials and retry policy.
    `sleep` and `clock` are attributes so tests can run retry schedules without waiting."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        virtual_key: str | None,
        timeouts: Timeouts,
        max_retry_seconds: float,
        verify: bool | str,
        allow_insecure_http: bool,
        transport: httpx.BaseTransport | None,
    ) -> None:
        url = checked_base_url(base_url, allow_insecure_http=allow_insecure_http)
        self.base_url = str(url).rstrip("/")
        self._api_key = _secret(checked_secret("api_key", api_key))
        self._virtual_key = _secret(checked_secret("virtual_key", virtual_key))
        self.retry = RetryPolicy(max_total_seconds=max_retry_seconds)
        self.sleep: Callable[[float], None] = time.sleep
        self.clock: Callable[[], float] = time.monotonic
        self.timeouts = timeouts.as_httpx()
        self._http = httpx.Client(
            base_url=url,
            timeout=self.timeouts,
            # Loading the CA store costs ~40 ms a client; a plain-http gateway never needs it.
            verify=ssl_verification(verify) if url.scheme == "https" else False,
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            # Environment proxies are for the outside world, never for a gateway on loopback.
            trust_env=not is_loopback_host(url.host),
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"GatewaySession(base_url={self.base_url!r})"

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def download(
        self,
        path: str,
        *,
        request_type: str,
        provider: str,
        dest: Path,
        accept: str,
        durable: bool = True,
    ) -> int:
        """GET `path` and stream the body into `dest` via a temp file in the same directory,
        flushed to disk before the rename unless not `durable` (a scratch copy read once and
        deleted: forcing it to disk would only cost disk bandwidth)."""
        dest.parent.mkdir(parents=True, exist_ok=True)

        def save(response: httpx.Response) -> int:
            fd, tmp_name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
            )
            try:
                size = 0
                with os.fdopen(fd, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        size += len(chunk)
                    if durable:
                        out.flush()
                        os.fsync(out.fileno())
                os.replace(tmp_name, dest)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
            return size

        return self.call(
            "GET", path, request_type=request_type, provider=provider, handle=save, accept=accept
        )

    def json(
        self,
        method: str,
        path: str,
        model: type[ModelT],
        *,
        request_type: str,
        provider: str | None,
        params: dict[str, Any] | None = None,
        retryable: bool = True,
        body: Body | None = None,
        deadline: float | None = None,
    ) -> ModelT:
        """One call whose 2xx answer is a JSON object parsed into `model`."""

        def parse(response: httpx.Response) -> ModelT:
            content = response.read()
            try:
                return model.model_validate_json(content)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "body"
                reason = f"not a {model.__name__} ({where}: {first['msg']})"
                raise GatewayProtocolError(method, path, response.status_code, reason) from None

        return self.call(
            method,
            path,
            request_type=request_type,
            provider=provider,
            params=params,
            retryable=retryable,
            body=body,
            handle=parse,
            deadline=deadline,
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        request_type: str,
        provider: str | None,
        handle: Callable[[httpx.Response], ResultT],
        params: dict[str, Any] | None = None,
        retryable: bool = True,
        body: Body | None = None,
        accept: str = "application/json",
        deadline: float | None = None,
    ) -> ResultT:
        """Send (and, when `retryable`, re-send) one call; `handle` reads a 2xx answer's body.
        A transport error while `handle` streams the body is retried like any other. With a
        `deadline` (on `clock`), no attempt waits past it and none starts after it."""
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                timeout = self._timeout_until(deadline, method, path)
                return self._attempt(
                    method,
                    path,
                    request_type=request_type,
                    provider=provider,
                    params=params,
                    body=body,
                    accept=accept,
                    attempt=attempt,
                    handle=handle,
                    timeout=timeout,
                )
            except (GatewayTransportError, GatewayStatusError) as error:
                delay = (
                    self.retry.next_delay(error, attempt, self.clock() - started)
                    if retryable
                    else None
                )
                if delay is not None and deadline is not None and self.clock() + delay >= deadline:
                    delay = None
                if delay is None:
                    error.attempts = attempt
                    raise
                logger.debug(
                    "retrying %s %s in %.2fs after: %s", method, path, delay, _error_kind(error)
                )
                self.sleep(delay)

    def _attempt(
        self,
        method: str,
        path: str,
        *,
        request_type: str,
        provider: str | None,
        params: dict[str, Any] | None,
        body: Body | None,
        accept: str,
        attempt: int,
        handle: Callable[[httpx.Response], ResultT],
        timeout: httpx.Timeout | None,
    ) -> ResultT:
        parts = body() if body is not None else {}
        if timeout is not None:
            parts["timeout"] = timeout
        headers = {**self._auth_headers(), "accept": accept, **parts.pop("headers", {})}
        if provider:
            headers["x-model-provider"] = provider
        query = {k: v for k, v in {"provider": provider, **(params or {})}.items() if v is not None}
        started = time.monotonic()
        status: int | str = "-"
        try:
            request = self._http.build_request(method, path, params=query, headers=headers, **parts)
            response = self._http.send(request, stream=True)
            status = response.status_code
            try:
                if not response.is_success:
                    raise self._status_error(method, path, response, provider, request_type)
                return handle(response)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            status = type(exc).__name__
            raise GatewayTimeoutError(
                method, path, _timeout_detail(exc), request_sent=not isinstance(exc, _NOT_SENT)
            ) from exc
        except httpx.TransportError as exc:
            status = type(exc).__name__
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise GatewayTLSError(
                    method,
                    path,
                    f"TLS certificate of {self._http.base_url.host} not trusted; "
                    "pass verify=<CA bundle path> for a private CA",
                    request_sent=False,
                ) from exc
            reason = self._redact(str(exc))
            detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
            raise GatewayConnectionError(
                method, path, detail, request_sent=not isinstance(exc, _NOT_SENT)
            ) from exc
        finally:
            logger.debug(
                "%s %s -> %s (attempt %d, %.3fs)",
                method,
                path,
                status,
                attempt,
                time.monotonic() - started,
            )

    def _timeout_until(
        self, deadline: float | None, method: str, path: str
    ) -> httpx.Timeout | None:
        """The client's timeouts cut to the time left before `deadline` (None: unchanged);
        raises a not-sent GatewayTimeoutError when no time is left."""
        if deadline is None:
            return None
        left = deadline - self.clock()
        if left <= 0:
            raise GatewayTimeoutError(method, path, "deadline passed", request_sent=False)
        limits = self.timeouts

        def cut(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=cut(limits.connect),
            read=cut(limits.read),
            write=cut(limits.write),
            pool=cut(limits.pool),
        )

    def _auth_headers(self) -> dict[str, str]:
        headers = {}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        if self._virtual_key is not None:
            headers["x-bf-vk"] = self._virtual_key.get_secret_value()
        return headers

    def _status_error(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        provider: str | None,
        request_type: str,
    ) -> GatewayStatusError:
        content = self._redact(_read_limited(response, ERROR_BODY_LIMIT).decode("utf-8", "replace"))
        error = parse_error_body(response.status_code, content, response.reason_phrase)
        extra = error.extra_fields
        return status_error_class(response.status_code)(
            method=method,
            path=path,
            status_code=response.status_code,
            error=error,
            provider=(extra.provider if extra and extra.provider else provider),
            request_type=(extra.request_type if extra and extra.request_type else request_type),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    def _redact(self, text: str) -> str:
        """Remove our own keys from foreign text before it can reach an exception or log."""
        for secret in (self._api_key, self._virtual_key):
            if secret is not None:
                text = text.replace(secret.get_secret_value(), "***")
        return text


def parse_error_body(status_code: int, content: str, reason: str = "") -> BifrostError:
    """A BifrostError from any error body: the gateway's JSON, a proxy's `{"error": "..."}` or
    `{"message": "..."}`, or plain text/HTML (collapsed to one truncated line)."""
    try:
        data = orjson.loads(content) if content.strip() else None
    except orjson.JSONDecodeError:
        data = None
    error = BifrostError()
    if isinstance(data, dict):
        try:
            error = BifrostError.model_validate(data)
        except ValidationError:
            error = BifrostError()
    message = error.error.message if error.error and error.error.message else None
    if message is None and isinstance(data, dict):
        candidate = data.get("message") or data.get("detail")
        message = candidate if isinstance(candidate, str) and candidate else None
    if message is None:
        message = one_line(content) or reason or f"HTTP {status_code}"
    detail = error.error or ErrorField()
    detail.message = message
    error.error = detail
    if error.status_code is None:
        error.status_code = status_code
    return error


def _read_limited(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed body (an error page may be large)."""
    buffer = bytearray()
    for chunk in response.iter_bytes():
        buffer += chunk
        if len(buffer) >= limit:
            break
    return bytes(buffer[:limit])


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when `kind` appears in the chain of causes behind `exc`."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _timeout_detail(exc: httpx.TimeoutException) -> str:
    kind = {
        httpx.ConnectTimeout: "connect",
        httpx.ReadTimeout: "read",
        httpx.WriteTimeout: "write",
        httpx.PoolTimeout: "pool",
    }.get(type(exc), "request")
    return f"{kind} timeout"


def _error_kind(error: GatewayError) -> str:
    if isinstance(error, GatewayStatusError):
        return f"HTTP {error.status_code}"
    return type(error).__name__


def _secret(value: str | None) -> SecretStr | None:
    return None if value is None else SecretStr(value)
