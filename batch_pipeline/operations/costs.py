"""Cost estimates before submitting, and budgets (the prices themselves: batch_pipeline.prices).

Estimates are deliberately simple and documented: input tokens ~= request bytes / 4 (the
input layer's estimate), output tokens = requests x ESTIMATED_OUTPUT_TOKENS (none for
embeddings). Actual spend uses the token counts the provider reports per request.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.inputs import InputPlan
from batch_pipeline.ledger.manifest import Manifest
from batch_pipeline.prices import PriceTable

ESTIMATED_OUTPUT_TOKENS = 256


class BudgetExceeded(BatchPipelineError):
    """Submitting would exceed a configured budget; nothing was submitted."""


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
