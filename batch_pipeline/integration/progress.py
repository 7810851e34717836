"""What Dagster's event log says about an instance's partitions: which submissions still wait
for a collect, and what was submitted today. Nothing here is stored anywhere else."""

from __future__ import annotations

import dagster as dg

from batch_pipeline.integration.names import PipelineNames

# Metadata of a submitted_batches materialization: the estimated cost of what that run created.
SUBMITTED_NOW_COST = "estimated_cost_submitted_now_usd"
DAY_SECONDS = 86_400
_PAGE = 1000


def uncollected_submissions(instance: dg.DagsterInstance, names: PipelineNames) -> dict[str, int]:
    """Partitions whose latest `submitted_batches` materialization is newer than their latest
    `batch_results` one: partition -> the storage id of that submission (one query per asset,
    whatever the number of partitions)."""
    # EventLogStorage's per-partition index is what Dagster's own asset status reads.
    log = instance.event_log_storage
    materialized = dg.DagsterEventType.ASSET_MATERIALIZATION
    submitted = log.get_latest_storage_id_by_partition(names.submitted_batches, materialized)
    collected = log.get_latest_storage_id_by_partition(names.batch_results, materialized)
    return {
        name: storage_id
        for name, storage_id in submitted.items()
        if collected.get(name, -1) < storage_id
    }


def spent_today(instance: dg.DagsterInstance, names: PipelineNames, now: float) -> float:
    """Estimated USD of every batch the instance created since 00:00 UTC, summed from the
    metadata of today's `submitted_batches` materializations."""
    midnight = now - now % DAY_SECONDS
    total, cursor = 0.0, None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=names.submitted_batches, after_timestamp=midnight),
            limit=_PAGE,
            cursor=cursor,
        )
        for record in page.records:
            materialization = record.asset_materialization
            value = materialization.metadata.get(SUBMITTED_NOW_COST) if materialization else None
            total += float(value.value) if value is not None else 0.0  # type: ignore[arg-type]
        if not page.has_more:
            return total
        cursor = page.cursor
