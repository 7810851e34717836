"""Sensors: the inbox (new file -> partition + submit run) and batch status (poll -> collect run)."""

import json
import os
import time

import dagster as dg

from batch_pipeline.defs.jobs import collect_job, submit_job
from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.gateway import GatewayError
from batch_pipeline.poll import poll_in_flight

# Submitting costs money, so the inbox sensor starts stopped unless asked for (make ui does).
_AUTOSUBMIT = os.environ.get("BATCH_PIPELINE_AUTOSUBMIT", "") == "1"


def _interval(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dg.sensor(
    job=submit_job,
    minimum_interval_seconds=_interval("BATCH_PIPELINE_INBOX_INTERVAL", 30),
    default_status=dg.DefaultSensorStatus.RUNNING
    if _AUTOSUBMIT
    else dg.DefaultSensorStatus.STOPPED,
    description="New files in data/inbox/ become partitions and get a submit run.",
)
def inbox_sensor(
    context: dg.SensorEvaluationContext, pipeline: PipelineSettings
) -> dg.SensorResult:
    known = set(context.instance.get_dynamic_partitions(input_files.name))
    new, refused = pipeline.layout().new_inputs(
        known, settle_seconds=pipeline.inbox_settle_seconds, now=time.time()
    )
    already_told = set(json.loads(context.cursor or "[]"))
    for message in refused:
        if message not in already_told:
            context.log.warning(f"inbox: {message}")
    if not new:
        return dg.SensorResult(skip_reason="no new input files", cursor=json.dumps(sorted(refused)))
    return dg.SensorResult(
        dynamic_partitions_requests=[input_files.build_add_request(new)],
        run_requests=[dg.RunRequest(partition_key=n, run_key=f"submit:{n}") for n in new],
        cursor=json.dumps(sorted(refused)),
    )


@dg.sensor(
    job=collect_job,
    minimum_interval_seconds=_interval("BATCH_PIPELINE_STATUS_INTERVAL", 30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls in-flight batches (bounded per tick, round-robin), records their "
    "progress as observations, and requests one collect run per file once all its batches "
    "are terminal; a failed collect is requested again, up to max_collect_attempts.",
)
def batch_status_sensor(
    context: dg.SensorEvaluationContext, gateway: GatewayResource, pipeline: PipelineSettings
) -> dg.SensorResult:
    cursor = json.loads(context.cursor or "{}")
    try:
        with gateway.client() as client:
            report = poll_in_flight(
                client,
                pipeline.store(),
                max_batches=pipeline.max_polls_per_tick,
                offset=cursor.get("offset", 0),
            )
    except GatewayError as exc:
        return dg.SensorResult(skip_reason=f"gateway unavailable: {exc}", cursor=context.cursor)
    for problem in report.problems[:20]:
        context.log.warning(problem)

    observations = [
        dg.AssetObservation(
            asset_key="submitted_batches",
            partition=name,
            metadata={
                "batches": dg.MetadataValue.json(
                    {
                        v.id: {"status": v.status, **(v.counts.model_dump() if v.counts else {})}
                        for v in views
                    }
                )
            },
        )
        for name, views in report.updated.items()
        if context.instance.has_dynamic_partition(input_files.name, name)
    ]
    run_requests = _collect_requests(context, report.ready, pipeline.max_collect_attempts)
    return dg.SensorResult(
        run_requests=run_requests,
        asset_events=observations,
        cursor=json.dumps({"offset": report.next_offset}),
        skip_reason=None
        if run_requests or observations
        else f"{report.in_flight} batches in flight, {report.polled} polled, none changed",
    )


def _collect_requests(
    context: dg.SensorEvaluationContext, ready: list[str], max_attempts: int
) -> list[dg.RunRequest]:
    """One collect run per ready file not yet collected; after a failed one, one more."""
    known = [n for n in ready if context.instance.has_dynamic_partition(input_files.name, n)]
    if not known:
        return []
    status = (
        context.instance.get_status_by_partition(dg.AssetKey("batch_results"), known, input_files)
        or {}
    )
    requests = []
    for name in known:
        state = status.get(name)
        if state in (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS):
            continue
        failed = context.instance.get_runs_count(
            dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.FAILURE],
                tags={"dagster/partition": name, **collect_job.tags},
            )
        )
        if failed >= max_attempts:
            context.log.warning(f"{name}: collect failed {failed} times; launch it by hand")
            continue
        requests.append(dg.RunRequest(partition_key=name, run_key=f"collect:{name}:{failed}"))
    return requests
