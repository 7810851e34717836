from pathlib import Path

from batch_pipeline.ledger.manifest import Manifest, ShardRecord
from batch_pipeline.operations.queue_limits import QueueGate


def _record(
    shard_id: str, tokens: int, *, batch_id: str | None = None, terminal: bool = False
) -> ShardRecord:
    return ShardRecord(
        shard_id=shard_id,
        provider="openai",
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        request_count=1,
        bytes=1,
        batch_id=batch_id,
        terminal=terminal,
        estimated_input_tokens=tokens,
    )


def test_gate_counts_in_flight_tokens_per_model() -> None:
    manifest = Manifest(input_file="a", input_sha256="x")
    manifest.shards["run"] = _record("run", 600, batch_id="b1")
    manifest.shards["done"] = _record("done", 10_000, batch_id="b2", terminal=True)
    gate = QueueGate([manifest], {"openai/gpt-4o-mini": 1000})
    assert gate.admit(_record("x", 300)) is None  # 900 in flight now
    reason = gate.admit(_record("y", 200))
    assert reason and "1,000" in reason and "900" in reason
    other = _record("z", 5000)
    other.model = "gpt-4.1"
    assert gate.admit(other) is None  # no cap for that model


def test_a_shard_larger_than_the_cap_goes_alone(tmp_path: Path) -> None:
    gate = QueueGate([], {"openai/gpt-4o-mini": 100})
    assert gate.admit(_record("big", 5000)) is None
    assert gate.admit(_record("next", 1)) is not None
