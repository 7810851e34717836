"""Pydantic models for every schema of Bifrost's /v1/files and /v1/batches API.

Field names and shapes follow ../shared/spec/bifrost-batch-openapi.yaml plus the fields the running
gateway emits (BIFROST-NOTES.md). Every model keeps unknown fields (gateways add fields over time),
and the open enums (status, purpose, provider, ...) accept values they do not know yet: a known
value parses to its enum member, an unknown one stays a plain string.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class GatewayModel(BaseModel):
    """Base of every wire model: unknown fields are kept, never dropped."""

    model_config = ConfigDict(extra="allow")


def _stringify(value: Any) -> Any:
    """Providers send some codes as numbers; Bifrost and we treat them as strings."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


LenientStr = Annotated[str | None, BeforeValidator(_stringify)]
JsonObject = dict[str, Any]


class BatchStatus(StrEnum):
    """Bifrost batch statuses; `canceled` (OpenAPI spelling) parses as CANCELLED (Go spelling)."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ENDED = "ended"

    @classmethod
    def _missing_(cls, value: object) -> BatchStatus | None:
        if not isinstance(value, str):
            return None
        spelling = value.strip().lower()
        aliases = {"canceled": cls.CANCELLED, "canceling": cls.CANCELLING}
        if spelling in aliases:
            return aliases[spelling]
        return next((member for member in cls if member.value == spelling), None)


class BatchEndpoint(StrEnum):
    """Endpoints a batch may target."""

    CHAT_COMPLETIONS = "/v1/chat/completions"
    EMBEDDINGS = "/v1/embeddings"
    COMPLETIONS = "/v1/completions"
    RESPONSES = "/v1/responses"
    MESSAGES = "/v1/messages"


class FilePurpose(StrEnum):
    """Purpose of an uploaded file."""

    BATCH = "batch"
    ASSISTANTS = "assistants"
    FINE_TUNE = "fine-tune"
    VISION = "vision"
    BATCH_OUTPUT = "batch_output"
    USER_DATA = "user_data"
    RESPONSES = "responses"
    EVALS = "evals"


class FileStatus(StrEnum):
    """Processing state of an uploaded file."""

    UPLOADED = "uploaded"
    PROCESSED = "processed"
    PROCESSING = "processing"
    ERROR = "error"
    DELETED = "deleted"


class ModelProvider(StrEnum):
    """Provider identifiers Bifrost knows (the spec's ModelProvider enum)."""

    ANTHROPIC = "anthropic"
    AZURE = "azure"
    BEDROCK = "bedrock"
    BEDROCK_MANTLE = "bedrock_mantle"
    CEREBRAS = "cerebras"
    COHERE = "cohere"
    DEEPSEEK = "deepseek"
    GEMINI = "gemini"
    GROQ = "groq"
    MISTRAL = "mistral"
    OLLAMA = "ollama"
    OPENCODE_GO = "opencode-go"
    OPENCODE_ZEN = "opencode-zen"
    OPENAI = "openai"
    PARASAIL = "parasail"
    PERPLEXITY = "perplexity"
    SGL = "sgl"
    VERTEX = "vertex"
    OPENROUTER = "openrouter"
    ELEVENLABS = "elevenlabs"
    HUGGINGFACE = "huggingface"
    NEBIUS = "nebius"
    XAI = "xai"
    REPLICATE = "replicate"
    VLLM = "vllm"
    RUNWAY = "runway"
    RUNWARE = "runware"
    FIREWORKS = "fireworks"
    SARVAM = "sarvam"
    WAFER = "wafer"
    DATABRICKS = "databricks"


# Open enums: the known member when the value is known, else the raw string (never a crash).
Status = Annotated[BatchStatus | str | None, Field(union_mode="left_to_right")]
Endpoint = Annotated[BatchEndpoint | str | None, Field(union_mode="left_to_right")]
Purpose = Annotated[FilePurpose | str | None, Field(union_mode="left_to_right")]
FileState = Annotated[FileStatus | str | None, Field(union_mode="left_to_right")]
Provider = Annotated[ModelProvider | str | None, Field(union_mode="left_to_right")]


class ParseError(GatewayModel):
    """A result-file line the gateway could not parse (1-based line over the raw file)."""

    code: LenientStr = None
    message: str | None = None
    line: int | None = None


class BifrostResponseExtraFields(GatewayModel):
    """Gateway bookkeeping attached to every successful JSON answer."""

    request_type: str | None = None
    provider: Provider = None
    model_requested: str | None = None
    model_deployment: str | None = None
    original_model_requested: str | None = None
    resolved_model_used: str | None = None
    latency: int | None = None
    chunk_index: int | None = None
    raw_request: Any = None
    raw_response: Any = None
    cache_debug: Any = None
    parse_errors: list[ParseError] | None = None
    converted_request_type: str | None = None
    dropped_compat_plugin_params: Any = None
    provider_response_headers: dict[str, Any] | None = None


class BifrostErrorExtraFields(GatewayModel):
    """Gateway bookkeeping attached to an error answer; every member may be absent."""

    provider: Provider = None
    model_requested: str | None = None
    original_model_requested: str | None = None
    resolved_model_used: str | None = None
    request_type: str | None = None
    error_type: str | None = None
    raw_request: Any = None
    raw_response: Any = None
    key_statuses: Any = None


class ErrorField(GatewayModel):
    """The `error` member of a BifrostError; `code` may arrive as a number."""

    type: str | None = None
    code: LenientStr = None
    message: str | None = None
    param: LenientStr = None
    event_id: str | None = None


def _error_field(value: Any) -> Any:
    """Some proxies answer `{"error": "text"}`; read it as the message."""
    return {"message": value} if isinstance(value, str) else value


class BifrostError(GatewayModel):
    """The JSON body of every non-2xx answer from the gateway."""

    event_id: str | None = None
    type: str | None = None
    is_bifrost_error: bool | None = None
    status_code: int | None = None
    error: Annotated[ErrorField | None, BeforeValidator(_error_field)] = None
    extra_fields: BifrostErrorExtraFields | None = None


class BatchRequestItem(GatewayModel):
    """One inline request of a batch: OpenAI style (`method`/`url`/`body`) or Anthropic (`params`)."""

    custom_id: str
    method: str | None = None
    url: str | None = None
    body: JsonObject | None = None
    params: JsonObject | None = None


class BatchCreateRequest(GatewayModel):
    """Body of POST /v1/batches; other top-level keys (e.g. Bedrock `role_arn`) pass through."""

    model: str | None = None
    input_file_id: str | None = None
    requests: list[BatchRequestItem] | None = None
    input_blob: str | None = None
    output_folder: JsonObject | None = None
    display_name: str | None = None
    endpoint: Endpoint = None
    completion_window: str | None = None
    metadata: dict[str, str] | None = None


class BatchRequestCounts(GatewayModel):
    """Request counters; the last four are omitted by the gateway when zero (so None = absent)."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    succeeded: int | None = None
    expired: int | None = None
    canceled: int | None = None
    pending: int | None = None


class BatchError(GatewayModel):
    """A batch-level error (e.g. a bad input line), not a per-request failure."""

    code: LenientStr = None
    message: str | None = None
    param: LenientStr = None
    line: int | None = None


class BatchErrors(GatewayModel):
    """The `errors` list object of a batch."""

    object: str | None = None
    data: list[BatchError] = Field(default_factory=list)


class BatchCreateResponse(GatewayModel):
    """Answer to POST /v1/batches."""

    id: str
    object: str | None = None
    endpoint: Endpoint = None
    input_file_id: str | None = None
    completion_window: str | None = None
    status: Status = None
    request_counts: BatchRequestCounts | None = None
    metadata: dict[str, str] | None = None
    created_at: int | None = None
    expires_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    processing_status: str | None = None
    results_url: str | None = None
    operation_name: str | None = None
    # Azure blob input (newer Bifrost): the input blob and, once written, the output blobs
    input_blob: str | None = None
    output_blob: str | None = None
    error_blob: str | None = None
    extra_fields: BifrostResponseExtraFields | None = None


class BatchRetrieveResponse(BatchCreateResponse):
    """A batch as returned by GET /v1/batches/{id} and inside a batch list: the create answer's
    fields plus the lifecycle timestamps, batch errors and provider-specific progress."""

    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    errors: BatchErrors | None = None
    archived_at: int | None = None
    done: bool | None = None
    progress: int | None = None


class BatchListResponse(GatewayModel):
    """One page of GET /v1/batches; pass `next_cursor` back as `after`."""

    object: str | None = None
    data: list[BatchRetrieveResponse] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
    next_cursor: str | None = None
    extra_fields: BifrostResponseExtraFields | None = None


class BatchCancelResponse(GatewayModel):
    """Answer to POST /v1/batches/{id}/cancel (Anthropic's `object` is `message_batch`)."""

    id: str
    object: str | None = None
    status: Status = None
    request_counts: BatchRequestCounts | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    extra_fields: BifrostResponseExtraFields | None = None


class BatchResultResponse(GatewayModel):
    """The provider's HTTP answer to one request of a batch (OpenAI style)."""

    status_code: int | None = None
    request_id: str | None = None
    body: JsonObject | None = None


class BatchResultData(GatewayModel):
    """Anthropic-style outcome of one request: `type` is succeeded/errored/canceled/expired."""

    type: str | None = None
    message: JsonObject | None = None


class BatchResultError(GatewayModel):
    """Why one request of a batch produced no response."""

    code: LenientStr = None
    message: str | None = None


class BatchResultItem(GatewayModel):
    """One request's outcome as returned by GET /v1/batches/{id}/results."""

    custom_id: str | None = None
    response: BatchResultResponse | None = None
    result: BatchResultData | None = None
    error: BatchResultError | None = None


class BatchResultsResponse(GatewayModel):
    """Answer to GET /v1/batches/{id}/results (never paginated in practice)."""

    batch_id: str | None = None
    results: list[BatchResultItem] = Field(default_factory=list)
    has_more: bool = False
    next_cursor: str | None = None
    extra_fields: BifrostResponseExtraFields | None = None


class FileUploadRequest(GatewayModel):
    """Form fields of POST /v1/files besides the file itself."""

    purpose: Purpose = FilePurpose.BATCH
    provider: Provider = None
    filename: str | None = None


class FileObject(GatewayModel):
    """A stored file as listed by GET /v1/files."""

    id: str
    object: str | None = None
    bytes: int | None = None
    created_at: int | None = None
    filename: str | None = None
    purpose: Purpose = None
    status: FileState = None
    status_details: str | None = None
    expires_at: int | None = None


class FileUploadResponse(FileObject):
    """Answer to POST /v1/files and GET /v1/files/{id}."""

    storage_backend: str | None = None
    storage_uri: str | None = None
    extra_fields: BifrostResponseExtraFields | None = None


class FileRetrieveResponse(FileUploadResponse):
    """Answer to GET /v1/files/{id} (same shape as an upload answer)."""


class FileListResponse(GatewayModel):
    """One page of GET /v1/files; the cursor to pass back is `after` (not `next_cursor`)."""

    object: str | None = None
    data: list[FileObject] = Field(default_factory=list)
    has_more: bool = False
    after: str | None = None
    extra_fields: BifrostResponseExtraFields | None = None


class FileDeleteResponse(GatewayModel):
    """Answer to DELETE /v1/files/{id}."""

    id: str
    object: str | None = None
    deleted: bool = False
    extra_fields: BifrostResponseExtraFields | None = None
