"""What Bifrost's SDK integration routes (`/openai`, `/anthropic`, `/genai`, `/bedrock`) share:
a route table over the common BatchService, each with its own error shape."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.responses import Response

from batch_pipeline.emulator.batches import ProviderBatches
from batch_pipeline.emulator.errors import ApiError
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.service import BatchService
from batch_pipeline.emulator.v1_routes import Call

Handler = Callable[[Call], Awaitable[Response]]
Route = tuple[str, tuple[str, ...], str, Handler]


def rfc3339(timestamp: float | None) -> str | None:
    """A Unix time as RFC 3339 in UTC, as Anthropic and Google APIs spell times."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class IntegrationRoutes(ABC):
    """One integration: its routes, how it picks the provider and how it renders errors."""

    def __init__(self, rt: Runtime, service: BatchService) -> None:
        self.rt = rt
        self.service = service

    @abstractmethod
    def routes(self) -> list[Route]:
        """(method, path pattern, request type, handler) of every route."""

    @abstractmethod
    def render_error(
        self, exc: ApiError, request_type: str | None, provider: str | None
    ) -> Response:
        """The integration's error body for an ApiError."""

    def header_provider(self, call: Call, request_type: str, default: str) -> ProviderBatches:
        """The provider from `x-model-provider`, else the integration's default."""
        name = call.request.headers.get("x-model-provider") or default
        call.provider = name
        return self.service.provider(name, request_type, "provider is required")
