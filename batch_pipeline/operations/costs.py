"""Prices, cost estimates before submitting, budgets, and spend from the provider's usage.

Estimates are deliberately simple and documented: input tokens ~= request bytes / 4 (the
input layer's estimate), output tokens = requests x ESTIMATED_OUTPUT_TOKENS (none for
embeddings). Actual spend uses the token counts the provider reports per request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.inputs import InputPlan
from batch_pipeline.ledger.manifest import Manifest

ESTIMATED_OUTPUT_TOKENS = 256
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


class BudgetExceeded(BatchPipelineError):
    """Submitting would exceed a configured budget; nothing was submitted."""


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


class Estimate(BaseModel):
    """Expected tokens and cost of a shard before it is submitted."""

    input_tokens: int
    output_tokens: int
    cost: float | None


def estimate(
    prices: PriceTable, *, provider: str, model: str, endpoint: str, bytes: int, requests: int
) -> Estimate:
    """The documented estimate of one shard (see the module docstring)."""
    input_tokens = bytes // 4
    output_tokens = 0 if endpoint == "/v1/embeddings" else requests * ESTIMATED_OUTPUT_TOKENS
    return Estimate(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=prices.cost(provider, model, input_tokens, output_tokens),
    )


def plan_estimates(plan: InputPlan, prices: PriceTable) -> dict[str, Estimate]:
    """The estimate of every shard of a plan, by shard id."""
    return {
        s.shard_id: estimate(
            prices,
            provider=s.provider,
            model=s.model,
            endpoint=s.endpoint,
            bytes=s.bytes,
            requests=s.request_count,
        )
        for s in plan.shards
    }


def check_plan_budget(
    manifest: Manifest | None,
    name: str,
    estimates: Mapping[str, Estimate],
    *,
    per_file: float | None,
    per_day: float | None,
    spent_today: float,
) -> float:
    """Refuse a file over budget; returns the estimated cost of its shards not yet submitted.

    The per-file budget weighs the whole file; the daily one what this run would add to
    `spent_today`, the estimated cost of the batches created since 00:00 UTC (the caller reads
    it from where submissions are recorded). `manifest` says which shards have batches already.
    """
    if per_file is not None or per_day is not None:
        unpriced = sorted({k for k, e in estimates.items() if e.cost is None})
        if unpriced:
            raise BudgetExceeded(
                f"{name}: a budget is set but {len(unpriced)} shard(s) use a model with no price; "
                "add it to prices_file so its cost can be counted"
            )
    done = (
        {s.shard_id for s in manifest.shards.values() if s.batch_id or s.terminal}
        if manifest
        else set()
    )
    file_cost = sum(e.cost or 0.0 for e in estimates.values())
    new_cost = sum(e.cost or 0.0 for sid, e in estimates.items() if sid not in done)
    if per_file is not None and file_cost > per_file:
        raise BudgetExceeded(
            f"{name}: estimated cost ${file_cost:.4f} exceeds the per-file budget "
            f"${per_file:.4f}; nothing was submitted (raise max_cost_per_file_usd or split the file)"
        )
    if per_day is not None and new_cost and spent_today + new_cost > per_day:
        raise BudgetExceeded(
            f"{name}: estimated cost ${new_cost:.4f} on top of ${spent_today:.4f} submitted today "
            f"(UTC) exceeds the daily budget ${per_day:.4f}; nothing was submitted"
        )
    return new_cost
