"""What we know about each provider behind Bifrost's batch API, in one table.

Inputs (sharding limits, custom_id rules, endpoints, native bodies), the gateway (submit mode,
results source) and the pipeline (retention alerts) all read these facts from here so they
cannot drift apart. Sources: ../shared/spec/BIFROST-NOTES.md sections 3.1, 4, 5 and 7, and
Bifrost's provider code (core/providers/{gemini,bedrock,vertex,azure}), summarized in
docs/emulator.md. `ProviderOptions` holds what an instance must tell some providers (where
Bedrock and Vertex write their output, which input Gemini and Azure take).
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

SubmitMode = Literal["file", "inline", "blob"]  # blob: Azure's input_blob
ResultsSource = Literal["files", "results_endpoint"]
LineFormat = Literal["openai", "anthropic"]  # {custom_id, method, url, body} or {custom_id, params}

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
    max_bytes_per_batch: int
    max_requests_per_batch: int = 50_000
    max_bytes_per_request: int = 10 * MB
    retention_days: int = 30
    custom_id_pattern: str | None = None
    keeps_metadata: bool = True
    line_format: LineFormat = "openai"
    endpoints: tuple[str, ...] = BATCH_ENDPOINTS
    min_requests_per_batch: int = 1
    # Bifrost forwards the body unchanged: the pipeline writes the model's native body
    native_bodies: bool = False
    # A `failed` batch may still hold results (Bedrock's PartiallyCompleted reads as failed)
    results_when_failed: bool = False
    # Results items may name a request by its position (`request-<n>`) instead of its id
    positional_ids: bool = False

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
        max_bytes_per_batch=200 * MB,
    ),
    "azure": ProviderTraits(
        name="azure",
        submit_mode="file",
        results_source="files",
        max_requests_per_batch=100_000,
        max_bytes_per_batch=200 * MB,
    ),
    "anthropic": ProviderTraits(
        name="anthropic",
        submit_mode="inline",
        results_source="results_endpoint",
        max_requests_per_batch=100_000,
        max_bytes_per_batch=256 * MB,
        retention_days=29,
        custom_id_pattern=r"[A-Za-z0-9_-]{1,64}",
        keeps_metadata=False,
        line_format="anthropic",
        endpoints=("/v1/messages",),
    ),
    # Inline requests up to Gemini's ~20 MB per inline batch (`ProviderOptions.gemini_input`
    # "file" uploads the shard to Gemini's Files API instead: up to 2 GB). Results through
    # /results only (a file's content cannot be downloaded through Bifrost); batch metadata is
    # not kept; output files are deleted after about 48 h.
    "gemini": ProviderTraits(
        name="gemini",
        submit_mode="inline",
        results_source="results_endpoint",
        max_bytes_per_batch=20 * MB,
        retention_days=2,
        keeps_metadata=False,
        endpoints=("/v1/chat/completions",),
        native_bodies=True,
        positional_ids=True,
    ),
    # Model-invocation jobs: Bifrost writes the inline requests to S3 beside the output prefix;
    # a job takes 100 to 50,000 records (Bedrock's quotas; Bifrost checks neither).
    "bedrock": ProviderTraits(
        name="bedrock",
        submit_mode="inline",
        results_source="results_endpoint",
        max_bytes_per_batch=1024 * MB,
        keeps_metadata=False,
        endpoints=("/v1/chat/completions", "/v1/messages"),
        min_requests_per_batch=100,
        native_bodies=True,
        results_when_failed=True,
    ),
    # Batch prediction jobs: Bifrost writes the inline requests to GCS beside the output folder.
    "vertex": ProviderTraits(
        name="vertex",
        submit_mode="inline",
        results_source="results_endpoint",
        max_bytes_per_batch=1024 * MB,
        keeps_metadata=False,
        endpoints=("/v1/chat/completions",),
        native_bodies=True,
    ),
}


GEMINI_FILE_MAX_BYTES = 2048 * MB  # a Gemini batch input file (inline batches: ~20 MB)

# An Azure storage account name, then a container name, as Azure allows them.
_AZURE_BLOB_PATH = re.compile(r"/[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}(?:/[^?#]*)?")
_AZURE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}\.blob\.core\.windows\.net")


def azure_blob_url_problem(url: str) -> str | None:
    """Why `url` is not an `https://ACCOUNT.blob.core.windows.net/CONTAINER[/PATH]` URL without
    query or credentials (a SAS token belongs in its variable), or None when it is one."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not _AZURE_ACCOUNT.fullmatch(parts.netloc):
        return "not an https://ACCOUNT.blob.core.windows.net/CONTAINER/... URL"
    if parts.query or parts.fragment or "?" in url:
        return "must carry no query string (put the SAS token in its variable)"
    if not _AZURE_BLOB_PATH.fullmatch(parts.path):
        return "names no valid container (3-63 lowercase letters, digits and single '-')"
    return None


class ProviderOptions(BaseModel):
    """What an instance tells the providers that need more than a model: where Bedrock and
    Vertex write their output (each batch gets its own folder under these), and which input
    Gemini and Azure take. None of it is a secret (a SAS token pasted into a URL by mistake is
    kept out of error messages too)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    gemini_input: Literal["inline", "file"] = "inline"
    bedrock_role_arn: str | None = None
    bedrock_output_s3_uri: str | None = None
    vertex_output_folder: str | None = None
    azure_input: Literal["file", "blob"] = "file"
    azure_blob_folder: str | None = None
    azure_blob_endpoint: str | None = Field(
        default=None,
        description="A base standing in for https://ACCOUNT.blob.core.windows.net when blobs "
        "are put and read, e.g. Azurite's http://127.0.0.1:10000/ACCOUNT; unset: the real URL",
    )
    azure_blob_sas_env: str = Field(
        default="AZURE_STORAGE_SAS_TOKEN",
        description="Variable holding the SAS token (read/write on the folder's container)",
    )

    @field_validator("azure_blob_folder")
    @classmethod
    def _blob_folder(cls, value: str | None) -> str | None:
        problem = value and azure_blob_url_problem(value)
        if problem:
            raise ValueError(f"azure_blob_folder: {problem}")
        return value

    def max_bytes_per_batch(self) -> dict[str, int]:
        """Batch byte limits these options change from the table's (provider -> bytes)."""
        return {"gemini": GEMINI_FILE_MAX_BYTES} if self.gemini_input == "file" else {}

    def missing(self, provider: str) -> str | None:
        """What must be set before a batch of `provider` can be made, or None."""
        needed = {
            "bedrock": ["bedrock_role_arn", "bedrock_output_s3_uri"],
            "vertex": ["vertex_output_folder"],
            "azure": ["azure_blob_folder"] if self.azure_input == "blob" else [],
        }.get(provider, [])
        unset = [name for name in needed if not getattr(self, name)]
        return ", ".join(unset) or None


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
