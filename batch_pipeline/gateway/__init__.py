"""Bifrost's /v1/files and /v1/batches API: typed models, a robust HTTP client, one error hierarchy.

    with BifrostClient("http://127.0.0.1:8080", api_key=key) as client:
        uploaded = client.upload_file(Path("shard.jsonl"), provider="openai")
        batch = client.create_batch(model="openai/gpt-4o-mini", endpoint="/v1/chat/completions",
                                    input_file_id=uploaded.id)
        view = BatchView.of(client.retrieve_batch(batch.id, provider="openai"), "openai")

Modules: models (wire schemas), errors (exceptions), client (BifrostClient), view (normalized
batch state), retry (backoff policy), config (timeouts, URL and TLS checks), inline_body
(streamed inline-requests create body), results_file (a saved results answer read item by item).
Nothing here knows about Dagster.
"""

from batch_pipeline.gateway.client import BifrostClient, encode_id
from batch_pipeline.gateway.config import Timeouts
from batch_pipeline.gateway.errors import (
    AuthenticationError,
    BadRequestError,
    GatewayConfigError,
    GatewayConnectionError,
    GatewayError,
    GatewayProtocolError,
    GatewayStatusError,
    GatewayTimeoutError,
    GatewayTLSError,
    GatewayTransportError,
    NotFoundError,
    RateLimitError,
    RequestFileError,
    ResultsFileError,
    ServerError,
)
from batch_pipeline.gateway.models import (
    BatchCancelResponse,
    BatchCreateRequest,
    BatchCreateResponse,
    BatchEndpoint,
    BatchError,
    BatchErrors,
    BatchListResponse,
    BatchRequestCounts,
    BatchRequestItem,
    BatchResultData,
    BatchResultError,
    BatchResultItem,
    BatchResultResponse,
    BatchResultsResponse,
    BatchRetrieveResponse,
    BatchStatus,
    BifrostError,
    BifrostErrorExtraFields,
    BifrostResponseExtraFields,
    ErrorField,
    FileDeleteResponse,
    FileListResponse,
    FileObject,
    FilePurpose,
    FileRetrieveResponse,
    FileStatus,
    FileUploadRequest,
    FileUploadResponse,
    ModelProvider,
    ParseError,
)
from batch_pipeline.gateway.results_file import iter_result_items
from batch_pipeline.gateway.retry import RETRYABLE_STATUS_CODES, RetryPolicy, parse_retry_after
from batch_pipeline.gateway.session import parse_error_body
from batch_pipeline.gateway.view import (
    TERMINAL_STATUSES,
    BatchView,
    NormalizedCounts,
    is_terminal,
    normalize_status,
)

__all__ = [
    "RETRYABLE_STATUS_CODES",
    "TERMINAL_STATUSES",
    "AuthenticationError",
    "BadRequestError",
    "BatchCancelResponse",
    "BatchCreateRequest",
    "BatchCreateResponse",
    "BatchEndpoint",
    "BatchError",
    "BatchErrors",
    "BatchListResponse",
    "BatchRequestCounts",
    "BatchRequestItem",
    "BatchResultData",
    "BatchResultError",
    "BatchResultItem",
    "BatchResultResponse",
    "BatchResultsResponse",
    "BatchRetrieveResponse",
    "BatchStatus",
    "BatchView",
    "BifrostClient",
    "BifrostError",
    "BifrostErrorExtraFields",
    "BifrostResponseExtraFields",
    "ErrorField",
    "FileDeleteResponse",
    "FileListResponse",
    "FileObject",
    "FilePurpose",
    "FileRetrieveResponse",
    "FileStatus",
    "FileUploadRequest",
    "FileUploadResponse",
    "GatewayConfigError",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayProtocolError",
    "GatewayStatusError",
    "GatewayTLSError",
    "GatewayTimeoutError",
    "GatewayTransportError",
    "ModelProvider",
    "NormalizedCounts",
    "NotFoundError",
    "ParseError",
    "RateLimitError",
    "RequestFileError",
    "ResultsFileError",
    "RetryPolicy",
    "ServerError",
    "Timeouts",
    "encode_id",
    "is_terminal",
    "iter_result_items",
    "normalize_status",
    "parse_error_body",
    "parse_retry_after",
]
