import json
import time
from pathlib import Path

import pytest

from batch_pipeline.ledger.manifest import ManifestStore, ShardRecord
from batch_pipeline.operations.costs import (
    BudgetExceeded,
    Estimate,
    Price,
    PriceTable,
    PriceTableError,
    check_plan_budget,
    estimate,
)


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


def _store_with_spend(tmp_path: Path, cost: float, created_at: float) -> ManifestStore:
    store = ManifestStore(tmp_path)
    with store.update("earlier", input_sha256="x") as manifest:
        manifest.shards["s"] = ShardRecord(
            shard_id="s",
            provider="openai",
            model="m",
            endpoint="/v1/chat/completions",
            request_count=1,
            bytes=1,
            batch_id="b",
            created_at=created_at,
            estimated_cost=cost,
        )
    return store


def test_budgets_refuse_with_a_clear_message(tmp_path: Path) -> None:
    now = time.time()
    store = _store_with_spend(tmp_path, 0.8, created_at=now)
    estimates = {"a": Estimate(input_tokens=1, output_tokens=1, cost=0.3)}
    assert check_plan_budget(store, "new", estimates, per_file=1.0, per_day=2.0, now=now) == 0.3
    with pytest.raises(BudgetExceeded, match=r"per-file budget \$0.2000"):
        check_plan_budget(store, "new", estimates, per_file=0.2, per_day=None, now=now)
    with pytest.raises(BudgetExceeded, match=r"\$0.8000 submitted today"):
        check_plan_budget(store, "new", estimates, per_file=None, per_day=1.0, now=now)


def test_todays_spend_counts_after_the_file_is_settled(tmp_path: Path) -> None:
    now = time.time()
    store = _store_with_spend(tmp_path, 0.8, created_at=now)
    store.settle("earlier")  # collected today: its manifest leaves the ticks, not the budget
    estimates = {"a": Estimate(input_tokens=1, output_tokens=1, cost=0.3)}
    with pytest.raises(BudgetExceeded, match=r"\$0.8000 submitted today"):
        check_plan_budget(store, "new", estimates, per_file=None, per_day=1.0, now=now)


def test_yesterdays_spend_does_not_count(tmp_path: Path) -> None:
    now = time.time()
    store = _store_with_spend(tmp_path, 5.0, created_at=now - 2 * 86_400)
    estimates = {"a": Estimate(input_tokens=1, output_tokens=1, cost=0.3)}
    check_plan_budget(store, "new", estimates, per_file=None, per_day=1.0, now=now)


def test_a_budget_refuses_models_it_cannot_price(tmp_path: Path) -> None:
    estimates = {"a": Estimate(input_tokens=1, output_tokens=1, cost=None)}
    store = ManifestStore(tmp_path)
    assert check_plan_budget(store, "f", estimates, per_file=None, per_day=None, now=0.0) == 0.0
    with pytest.raises(BudgetExceeded, match="no price"):
        check_plan_budget(store, "f", estimates, per_file=1.0, per_day=None, now=0.0)
