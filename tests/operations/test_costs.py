import json
from pathlib import Path

import pytest

from batch_pipeline.ledger.manifest import Manifest, ShardRecord
from batch_pipeline.operations.costs import (
    BudgetExceeded,
    Estimate,
    check_plan_budget,
    estimate,
)
from batch_pipeline.prices import Price, PriceTable, PriceTableError


@pytest.mark.parametrize(
    ("price", "tokens", "expected"),
    [
        (Price(input_per_1m=0.15, output_per_1m=0.60), (1_000_000, 0), 0.075),
        (Price(input_per_1m=0.15, output_per_1m=0.60), (0, 1_000_000), 0.30),
        (Price(input_per_1m=1.0, output_per_1m=2.0, batch_discount=0.0), (500_000, 250_000), 1.0),
    ],
)
def test_batch_price(price: Price, tokens: tuple[int, int], expected: float) -> None:
    assert price.cost(*tokens) == pytest.approx(expected)


def test_price_table_defaults_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"openai/gpt-4o-mini": {"input_per_1m": 1, "output_per_1m": 1}}))
    table = PriceTable.load(path, overrides={"acme/x": {"input_per_1m": 2, "output_per_1m": 0}})
    assert table.price("openai", "gpt-4o-mini").input_per_1m == 1
    assert table.price("anthropic", "claude-3-5-haiku-latest") is not None
    assert table.cost("acme", "x", 1_000_000, 0) == pytest.approx(1.0)
    assert table.cost("nobody", "y", 1, 1) is None


@pytest.mark.parametrize("content", ["not json", json.dumps({"a/b": {"input_per_1m": -1}})])
def test_bad_price_table_is_one_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PriceTableError) as info:
        PriceTable.load(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("endpoint", "output_tokens"), [("/v1/chat/completions", 10 * 256), ("/v1/embeddings", 0)]
)
def test_estimate(endpoint: str, output_tokens: int) -> None:
    e = estimate(
        PriceTable(),
        provider="openai",
        model="gpt-4o-mini",
        endpoint=endpoint,
        bytes=4000,
        requests=10,
    )
    assert (e.input_tokens, e.output_tokens) == (1000, output_tokens)
    assert e.cost == pytest.approx((1000 * 0.15 + output_tokens * 0.60) / 1e6 / 2)


def _manifest(submitted: bool) -> Manifest:
    record = ShardRecord(
        shard_id="a",
        provider="openai",
        model="m",
        endpoint="/v1/chat/completions",
        request_count=1,
        bytes=1,
        batch_id="b" if submitted else None,
    )
    return Manifest(input_file="new", input_sha256="x", shards={"a": record})


def test_budgets_refuse_with_a_clear_message() -> None:
    estimates = {"a": Estimate(input_tokens=1, output_tokens=1, cost=0.3)}
    spent = {"spent_today": 0.8}
    assert check_plan_budget(None, "new", estimates, per_file=1.0, per_day=2.0, **spent) == 0.3
    with pytest.raises(BudgetExceeded, match=r"per-file budget \$0.2000"):
        check_plan_budget(None, "new", estimates, per_file=0.2, per_day=None, **spent)
    with pytest.raises(BudgetExceeded, match=r"\$0.3000 on top of \$0.8000 submitted today"):
        check_plan_budget(None, "new", estimates, per_file=None, per_day=1.0, **spent)


def test_shards_already_submitted_cost_nothing_more_today() -> None:
    estimates = {"a": Estimate(input_tokens=1, output_tokens=1, cost=0.3)}
    resubmitted = check_plan_budget(
        _manifest(submitted=True), "new", estimates, per_file=1.0, per_day=0.9, spent_today=0.8
    )
    assert resubmitted == 0.0  # a re-run adds no batch: nothing is checked against the day
    with pytest.raises(BudgetExceeded, match="daily budget"):
        check_plan_budget(
            _manifest(submitted=False), "new", estimates, per_file=1.0, per_day=0.9, spent_today=0.8
        )


def test_a_budget_refuses_models_it_cannot_price() -> None:
    estimates = {"a": Estimate(input_tokens=1, output_tokens=1, cost=None)}
    free = {"per_day": None, "spent_today": 0.0}
    assert check_plan_budget(None, "f", estimates, per_file=None, **free) == 0.0
    with pytest.raises(BudgetExceeded, match="no price"):
        check_plan_budget(None, "f", estimates, per_file=1.0, **free)
