import pytest

from batch_pipeline.ledger.manifest import Manifest, ShardRecord
from batch_pipeline.operations.alerts import DAY, error_rate, retention_risk, stuck_batches

NOW = 1_800_000_000.0


def _manifest(**fields) -> Manifest:
    record = ShardRecord(
        shard_id="s",
        provider=fields.pop("provider", "openai"),
        model="m",
        endpoint="/v1/chat/completions",
        request_count=1,
        bytes=1,
        batch_id="b1",
        **fields,
    )
    return Manifest(input_file="f", input_sha256="x", shards={"s": record})


@pytest.mark.parametrize(
    ("expires_at", "terminal", "passed"),
    [
        (NOW - 7 * 3600, False, False),
        (NOW - 5 * 3600, False, True),
        (NOW - 7 * 3600, True, True),
        (None, False, True),
    ],
)
def test_stuck_batches(expires_at, terminal, passed) -> None:
    finding = stuck_batches(
        _manifest(expires_at=expires_at, terminal=terminal), now=NOW, grace_seconds=6 * 3600
    )
    assert finding.passed is passed
    assert finding.batch_ids == (() if passed else ("b1",))


@pytest.mark.parametrize(
    ("provider", "age_days", "collected", "passed"),
    [
        ("openai", 28, False, False),  # 2 days left of 30, margin 3
        ("openai", 26, False, True),
        ("anthropic", 27, False, False),  # 2 days left of 29
        ("openai", 29, True, True),  # collected: nothing to lose
    ],
)
def test_retention_risk(provider, age_days, collected, passed) -> None:
    manifest = _manifest(provider=provider, created_at=NOW - age_days * DAY, terminal=True)
    finding = retention_risk(manifest, now=NOW, margin_days=3, collected=collected)
    assert finding.passed is passed


@pytest.mark.parametrize(
    ("errors", "total", "passed"), [(1, 10, True), (3, 10, False), (0, 0, True)]
)
def test_error_rate(errors, total, passed) -> None:
    assert error_rate(errors, total, threshold=0.2).passed is passed
