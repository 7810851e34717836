"""One provider-independent answer to "what happened to this batch?".

Providers report through Bifrost with different conventions: Anthropic batches end as `ended`
whatever happened and only the counters tell success from cancellation; Gemini's `completed`
counts processed requests, not successful ones; status is spelled `cancelled` or `canceled`.
BatchView hides those differences from the rest of the pipeline.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from batch_pipeline.gateway.models import (
    BatchCancelResponse,
    BatchCreateResponse,
    BatchError,
    BatchRequestCounts,
    BatchRetrieveResponse,
    BatchStatus,
)
from batch_pipeline.providers import PROVIDERS, ResultsSource

TERMINAL_STATUSES = frozenset(
    {
        BatchStatus.COMPLETED,
        BatchStatus.FAILED,
        BatchStatus.EXPIRED,
        BatchStatus.CANCELLED,
        BatchStatus.ENDED,
    }
)


def normalize_status(status: str | None) -> str:
    """The canonical spelling of a status (`canceled` -> `cancelled`); unknown values are kept
    lower-cased and a missing status is `unknown`."""
    if status is None or not str(status).strip():
        return "unknown"
    try:
        return BatchStatus(status).value
    except ValueError:
        return str(status).strip().lower()


def is_terminal(status: str | None, done: bool | None = None) -> bool:
    """True when a batch will not change any more: completed, failed, expired, cancelled (either
    spelling) or ended, or when the gateway says `done: true`. Unknown statuses are not terminal."""
    return done is True or normalize_status(status) in TERMINAL_STATUSES


class NormalizedCounts(BaseModel):
    """Request counts in one vocabulary for every provider; `pending` is not yet decided."""

    model_config = ConfigDict(frozen=True)

    total: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0
    pending: int = 0

    @classmethod
    def of(
        cls, counts: BatchRequestCounts | None, provider: str, status: str | None = None
    ) -> NormalizedCounts:
        """Map the gateway's counters (the zero-valued optional ones are absent on the wire).
        In a batch that ended cancelled or expired, requests never decided count as such."""
        if counts is None:
            return cls()
        canceled = counts.canceled or 0
        expired = counts.expired or 0
        if provider == "gemini":
            # Gemini's `completed` counts processed requests; `failed` = processed - successful.
            succeeded = max(counts.completed - counts.failed, 0)
        else:
            succeeded = counts.succeeded if counts.succeeded is not None else counts.completed
        errored = counts.failed
        if counts.pending is not None:
            pending = counts.pending
        else:
            pending = max(counts.total - succeeded - errored - canceled - expired, 0)
        final = normalize_status(status)
        if final == BatchStatus.CANCELLED:
            canceled, pending = canceled + pending, 0
        elif final == BatchStatus.EXPIRED:
            expired, pending = expired + pending, 0
        return cls(
            total=counts.total,
            succeeded=succeeded,
            errored=errored,
            canceled=canceled,
            expired=expired,
            pending=pending,
        )


def results_source_for(provider: str, output_file_id: str | None) -> ResultsSource:
    """Where a finished batch's results live: output/error files or the results endpoint.
    Providers outside providers.PROVIDERS are judged by whether they name an output file."""
    traits = PROVIDERS.get(provider)
    if traits is not None:
        return traits.results_source
    return "files" if output_file_id else "results_endpoint"


class BatchView(BaseModel):
    """The normalized state of one batch; timestamps are Unix seconds as on the wire."""

    model_config = ConfigDict(frozen=True)

    id: str
    provider: str
    status: str
    raw_status: str | None
    terminal: bool
    counts: NormalizedCounts
    results_source: ResultsSource
    output_file_id: str | None = None
    error_file_id: str | None = None
    output_blob: str | None = None
    error_blob: str | None = None
    errors: list[BatchError] = []
    expires_at: int | None = None
    created_at: int | None = None

    @classmethod
    def of(
        cls,
        batch: BatchRetrieveResponse | BatchCreateResponse | BatchCancelResponse,
        provider: str,
    ) -> BatchView:
        """Build the view from any gateway answer that describes a batch."""
        raw_status = None if batch.status is None else str(batch.status)
        done = batch.done if isinstance(batch, BatchRetrieveResponse) else None
        errors = (
            batch.errors.data if isinstance(batch, BatchRetrieveResponse) and batch.errors else []
        )
        output_file_id = getattr(batch, "output_file_id", None)
        return cls(
            id=batch.id,
            provider=provider,
            status=normalize_status(raw_status),
            raw_status=raw_status,
            terminal=is_terminal(raw_status, done),
            counts=NormalizedCounts.of(batch.request_counts, provider, raw_status),
            results_source=results_source_for(provider, output_file_id),
            output_file_id=output_file_id,
            error_file_id=getattr(batch, "error_file_id", None),
            output_blob=getattr(batch, "output_blob", None),
            error_blob=getattr(batch, "error_blob", None),
            errors=list(errors),
            expires_at=getattr(batch, "expires_at", None),
            created_at=getattr(batch, "created_at", None),
        )
