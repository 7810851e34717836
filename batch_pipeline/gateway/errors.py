"""The one exception hierarchy of the gateway client.

GatewayError
├── GatewayConfigError        the client was configured wrongly (nothing was sent)
├── RequestFileError          a JSONL file of inline requests is malformed (nothing was sent)
├── ResultsFileError          a saved results answer is not a results document
├── GatewayProtocolError      a 2xx answer whose body is not what the API promises
├── GatewayTransportError     no HTTP answer; `.request_sent` says whether the outcome is unknown
│   ├── GatewayTimeoutError
│   └── GatewayConnectionError
│       └── GatewayTLSError   the server's certificate was not trusted (not retried)
└── GatewayStatusError        a non-2xx answer, carrying the parsed BifrostError
    ├── BadRequestError       400
    ├── AuthenticationError   401, 403
    ├── NotFoundError         404
    ├── RateLimitError        429
    └── ServerError           5xx

Every message is one line a person can act on and never contains a key or an auth header.
"""

from __future__ import annotations

from typing import ClassVar

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.gateway.models import BifrostError

MAX_MESSAGE_CHARS = 300


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Collapse whitespace and truncate, so any server text fits on one log line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class GatewayError(BatchPipelineError):
    """Base of everything the gateway client raises; `retryable` says whether trying later may help."""

    retryable: ClassVar[bool] = False


class GatewayConfigError(GatewayError):
    """The client cannot be used as configured (bad URL, insecure transport, bad CA bundle)."""


class RequestFileError(GatewayError):
    """A line of a JSONL file of inline batch requests is not a request object."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


class ResultsFileError(GatewayError):
    """A saved `/v1/batches/{id}/results` answer cannot be read as a results document."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = one_line(reason)
        super().__init__(f"{path}: at character {offset}: {self.reason}")


class GatewayProtocolError(GatewayError):
    """The gateway answered 2xx with a body that does not match the API."""

    def __init__(self, method: str, path: str, status_code: int, reason: str) -> None:
        self.method = method
        self.path = path
        self.status_code = status_code
        super().__init__(f"{method} {path}: HTTP {status_code} with an unexpected body: {reason}")


class GatewayTransportError(GatewayError):
    """No HTTP answer arrived. `request_sent` is True when the request may have reached the server,
    so the outcome of a non-idempotent call (a create) is unknown and must be checked, not retried."""

    retryable: ClassVar[bool] = True

    def __init__(self, method: str, path: str, detail: str, *, request_sent: bool) -> None:
        self.method = method
        self.path = path
        self.request_sent = request_sent
        self.attempts = 1
        outcome = (
            "the request may have reached the gateway, outcome unknown"
            if request_sent
            else "the request was not sent"
        )
        super().__init__(f"{method} {path}: {one_line(detail)} ({outcome})")


class GatewayTimeoutError(GatewayTransportError):
    """A connect, read, write or pool timeout expired."""


class GatewayConnectionError(GatewayTransportError):
    """The connection could not be made or broke before a complete answer arrived."""


class GatewayTLSError(GatewayConnectionError):
    """The gateway's TLS certificate failed verification; retrying cannot help."""

    retryable: ClassVar[bool] = False


class GatewayStatusError(GatewayError):
    """The gateway answered with a non-2xx status; `error` is its parsed BifrostError body."""

    hint: ClassVar[str] = ""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        status_code: int,
        error: BifrostError,
        provider: str | None,
        request_type: str | None,
        retry_after: float | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status_code = status_code
        self.error = error
        self.provider = provider
        self.request_type = request_type
        self.retry_after = retry_after
        self.attempts = 1
        super().__init__(self._message())

    @property
    def message(self) -> str:
        """The gateway's own explanation, one line."""
        detail = self.error.error
        return one_line(detail.message) if detail and detail.message else "no error message"

    def _message(self) -> str:
        detail = self.error.error
        kind = (detail.type or "") if detail else ""
        if detail and detail.code:
            kind = f"{kind} (code {detail.code})".strip()
        context = ", ".join(
            f"{name}={value}"
            for name, value in (("provider", self.provider), ("request_type", self.request_type))
            if value
        )
        text = f"{self.method} {self.path}: HTTP {self.status_code}"
        text += f" {kind}: {self.message}" if kind else f": {self.message}"
        if context:
            text += f" ({context})"
        return text + (f"; {self.hint}" if self.hint else "")

    def __str__(self) -> str:
        text = self._message()
        if self.attempts > 1:
            text += f" [gave up after {self.attempts} attempts]"
        return text


class BadRequestError(GatewayStatusError):
    """400: the gateway rejected the request as malformed."""

    hint: ClassVar[str] = "fix the request; retrying it unchanged will fail again"


class AuthenticationError(GatewayStatusError):
    """401/403: missing, wrong or insufficient key."""

    hint: ClassVar[str] = "check BIFROST_API_KEY / the virtual key and its permissions"


class NotFoundError(GatewayStatusError):
    """404: no such object for this provider (or it belongs to another virtual key)."""

    hint: ClassVar[str] = "check the id and the provider it was created with"


class RateLimitError(GatewayStatusError):
    """429: the gateway or provider asks us to slow down."""

    retryable: ClassVar[bool] = True
    hint: ClassVar[str] = "rate limited; try again later"


class ServerError(GatewayStatusError):
    """5xx: the gateway or the provider behind it failed."""

    retryable: ClassVar[bool] = True
    hint: ClassVar[str] = "gateway or provider failure; try again later"


def status_error_class(status_code: int) -> type[GatewayStatusError]:
    """The exception class for a non-2xx status code."""
    if status_code == 400:
        return BadRequestError
    if status_code in (401, 403):
        return AuthenticationError
    if status_code == 404:
        return NotFoundError
    if status_code == 429:
        return RateLimitError
    if status_code >= 500:
        return ServerError
    return GatewayStatusError
