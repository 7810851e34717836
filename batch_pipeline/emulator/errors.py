"""Bifrost's error answers: one exception the routes raise, rendered as a `BifrostError` body."""

from __future__ import annotations

from typing import Any

GOOGLE_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error answer; `bifrost=True` marks Bifrost's own operation errors (HTTP 500 when no code)."""

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        bifrost: bool = False,
        headers: dict[str, str] | None = None,
        handler: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.bifrost = bifrost
        self.headers = headers or {}
        self.handler = handler

    @property
    def http_status(self) -> int:
        """Bifrost's rule: status_code if set, else 400 for caller errors and 500 for its own."""
        if self.status is not None:
            return self.status
        return 500 if self.bifrost else 400

    def body(self, request_type: str | None, provider: str | None) -> dict[str, Any]:
        """The BifrostError JSON; null members are omitted as Go's omitempty does. A handler's
        own validation error carries empty `extra_fields`, as Bifrost's SendError does."""
        error: dict[str, Any] = {"message": self.message}
        for key in ("type", "code", "param"):
            value = getattr(self, key)
            if value is not None:
                error[key] = value
        extra: dict[str, Any] = {}
        if not self.handler:
            if provider:
                extra["provider"] = provider
            if request_type:
                extra["request_type"] = request_type
        body: dict[str, Any] = {"is_bifrost_error": self.bifrost}
        if self.status is not None:
            body["status_code"] = self.status
        body["error"] = error
        body["extra_fields"] = extra
        return body


def bad_request(message: str) -> ApiError:
    """A handler validation error: `is_bifrost_error:false`, status 400, empty extra_fields."""
    return ApiError(400, message, handler=True)


def unsupported(request_type: str, provider: str) -> ApiError:
    """Bifrost's unsupported-operation error: no status_code member (so HTTP 400)."""
    return ApiError(
        None,
        f"{request_type} is not supported by {provider} provider",
        code="unsupported_operation",
    )


def google_error(status: int, message: str) -> ApiError:
    """An upstream Google (Gemini, Vertex) error passed through by Bifrost."""
    return ApiError(status, message, type=GOOGLE_STATUS.get(status, "INVALID_ARGUMENT"))


def openai_not_found(message: str) -> ApiError:
    """An upstream OpenAI 404 passed through by Bifrost."""
    return ApiError(404, message, type="invalid_request_error")


def anthropic_not_found(message: str) -> ApiError:
    """An upstream Anthropic 404 passed through by Bifrost."""
    return ApiError(404, message, type="not_found_error")
