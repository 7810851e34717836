"""What the rows of one batch share: its id, provider, model, endpoint, price and answer format."""

from __future__ import annotations

from dataclasses import dataclass

from batch_pipeline.prices import Price
from batch_pipeline.results.structured import StructuredOutput


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What the rows of one batch share; None where it is not known (e.g. no gateway).

    `price` prices each result's tokens (cost_usd); `structured` checks each result's answer
    against a template's response_format (a bad one becomes a `parse` error).
    """

    batch_id: str | None
    provider: str | None
    model: str | None = None
    endpoint: str | None = None
    price: Price | None = None
    structured: StructuredOutput | None = None
