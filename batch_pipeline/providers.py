"""What we know about each provider behind Bifrost's batch API, in one table.

Inputs (sharding limits, custom_id rules), the gateway (submit mode, results source) and the
pipeline (retention alerts) all read these facts from here so they cannot drift apart.
Sources: ../shared/spec/BIFROST-NOTES.md sections 3.1, 4, 5 and 7.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

SubmitMode = Literal["file", "inline"]
ResultsSource = Literal["files", "results_endpoint"]

BATCH_ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
)

# Bifrost's default `client.max_request_body_size_mb`: caps an upload and an inline create body.
GATEWAY_MAX_BODY_BYTES = 100 * 1024 * 1024

MB = 1024 * 1024


class ProviderTraits(BaseModel):
    """How one provider's batches behave when reached through Bifrost."""

    model_config = ConfigDict(frozen=True)

    name: str
    submit_mode: SubmitMode
    results_source: ResultsSource
    max_requests_per_batch: int
    max_bytes_per_batch: int
    max_bytes_per_request: int
    retention_days: int
    custom_id_pattern: str | None = None
    keeps_metadata: bool = True

    def custom_id_allowed(self, custom_id: str) -> bool:
        """True when the provider accepts this custom_id (Anthropic restricts the alphabet)."""
        return (
            self.custom_id_pattern is None
            or re.fullmatch(self.custom_id_pattern, custom_id) is not None
        )


PROVIDERS: dict[str, ProviderTraits] = {
    "openai": ProviderTraits(
        name="openai",
        submit_mode="file",
        results_source="files",
        max_requests_per_batch=50_000,
        max_bytes_per_batch=200 * MB,
        max_bytes_per_request=10 * MB,
        retention_days=30,
    ),
    "azure": ProviderTraits(
        name="azure",
        submit_mode="file",
        results_source="files",
        max_requests_per_batch=100_000,
        max_bytes_per_batch=200 * MB,
        max_bytes_per_request=10 * MB,
        retention_days=30,
    ),
    "anthropic": ProviderTraits(
        name="anthropic",
        submit_mode="inline",
        results_source="results_endpoint",
        max_requests_per_batch=100_000,
        max_bytes_per_batch=256 * MB,
        max_bytes_per_request=10 * MB,
        retention_days=29,
        custom_id_pattern=r"[A-Za-z0-9_-]{1,64}",
        keeps_metadata=False,
    ),
    "gemini": ProviderTraits(
        name="gemini",
        submit_mode="file",
        results_source="results_endpoint",
        max_requests_per_batch=100_000,
        max_bytes_per_batch=2048 * MB,
        max_bytes_per_request=10 * MB,
        retention_days=2,
        keeps_metadata=False,
    ),
}


def provider_traits(name: str) -> ProviderTraits:
    """Traits of a provider we support; a clear error for one we do not."""
    try:
        return PROVIDERS[name]
    except KeyError:
        supported = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"unsupported provider {name!r} (supported: {supported})") from None


def split_model(model: str) -> tuple[str, str] | None:
    """Split `provider/model` into its parts; None when there is no provider prefix."""
    provider, sep, bare = model.partition("/")
    if not sep or not provider or not bare:
        return None
    return provider, bare
