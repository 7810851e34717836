"""Queue limits: hold shards back while a provider/model already has too many tokens enqueued.

Providers cap the tokens a batch queue may hold (OpenAI's "enqueued token limit"); a create
over it fails at the provider hours later. Here a shard simply waits, visibly, until enough of
the batches in flight finish; the status sensor then asks for another submit run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from batch_pipeline.ledger.manifest import Manifest, ShardRecord


class QueueGate:
    """Admits a shard when the estimated tokens in flight for its provider/model stay under cap."""

    def __init__(self, manifests: Iterable[Manifest], caps: Mapping[str, int]) -> None:
        self.caps = dict(caps)
        self.enqueued: dict[str, int] = defaultdict(int)
        if self.caps:
            for manifest in manifests:
                for record in manifest.shards.values():
                    if record.in_flight:
                        self.enqueued[queue_key(record)] += record.estimated_input_tokens

    def admit(self, record: ShardRecord) -> str | None:
        """None when the shard may be created now (and count it), else why it waits.
        A shard larger than the cap on its own goes when nothing else is enqueued."""
        key = queue_key(record)
        cap = self.caps.get(key)
        if cap is None:
            return None
        after = self.enqueued[key] + record.estimated_input_tokens
        if self.enqueued[key] and after > cap:
            return (
                f"{key}: {self.enqueued[key]:,} estimated tokens already enqueued; this shard's "
                f"{record.estimated_input_tokens:,} would pass the cap of {cap:,}"
            )
        self.enqueued[key] = after
        return None


def queue_key(record: ShardRecord) -> str:
    """The provider/model a queue cap is set for."""
    return f"{record.provider}/{record.model}"
