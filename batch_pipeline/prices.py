"""Token prices by `provider/model` at batch rates: the shipped table, a JSON file, config.

Plain data with no pipeline dependency: the results layer prices each row with it, the
operations estimate and budget with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from batch_pipeline.errors import BatchPipelineError

BATCH_DISCOUNT = 0.5


class Price(BaseModel):
    """List price per 1M tokens and the discount batches get."""

    model_config = ConfigDict(frozen=True)

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    batch_discount: float = Field(default=BATCH_DISCOUNT, ge=0, le=1)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Batch cost in USD of this many tokens."""
        full = (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / 1e6
        return full * (1 - self.batch_discount)


# USD list prices of the models in the samples and their close relatives (2026 list prices).
DEFAULT_PRICES: dict[str, Price] = {
    "openai/gpt-4o-mini": Price(input_per_1m=0.15, output_per_1m=0.60),
    "openai/gpt-4o": Price(input_per_1m=2.50, output_per_1m=10.00),
    "openai/gpt-4.1-mini": Price(input_per_1m=0.40, output_per_1m=1.60),
    "openai/gpt-4.1": Price(input_per_1m=2.00, output_per_1m=8.00),
    "openai/text-embedding-3-small": Price(input_per_1m=0.02, output_per_1m=0.0),
    "openai/text-embedding-3-large": Price(input_per_1m=0.13, output_per_1m=0.0),
    "anthropic/claude-3-5-haiku-latest": Price(input_per_1m=0.80, output_per_1m=4.00),
    "anthropic/claude-sonnet-4-5": Price(input_per_1m=3.00, output_per_1m=15.00),
}


class PriceTableError(BatchPipelineError, ValueError):
    """A price table file or override that cannot be used."""


class PriceTable:
    """Prices by `provider/model`: the defaults, overridden by a JSON file and by config."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: Mapping[str, Mapping] | None = None
    ) -> PriceTable:
        """Defaults, then `path` (JSON: {"provider/model": {"input_per_1m": .., ...}}), then overrides."""
        prices = dict(DEFAULT_PRICES)
        extra: dict[str, Mapping] = {}
        if path:
            try:
                extra.update(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as exc:
                raise PriceTableError(f"{path}: cannot read the price table: {exc}") from None
        extra.update(overrides or {})
        for key, value in extra.items():
            try:
                prices[key] = Price.model_validate(value)
            except ValueError as exc:
                reason = str(exc).splitlines()[0]
                raise PriceTableError(f"price of {key!r} is not usable: {reason}") from None
        return cls(prices)

    def price(self, provider: str, model: str) -> Price | None:
        return self.prices.get(f"{provider}/{model}")

    def cost(
        self, provider: str, model: str, input_tokens: int, output_tokens: int
    ) -> float | None:
        """USD for these tokens, or None when the model has no price."""
        price = self.price(provider, model)
        return None if price is None else price.cost(input_tokens, output_tokens)
