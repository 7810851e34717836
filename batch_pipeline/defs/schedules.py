"""A schedule that submits everything waiting in the inbox at a set time (off by default)."""

import os
import time

import dagster as dg

from batch_pipeline.defs.jobs import submit_job
from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import PipelineSettings


@dg.schedule(
    job=submit_job,
    cron_schedule=os.environ.get("BATCH_PIPELINE_SUBMIT_CRON", "0 2 * * *"),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Registers new inbox files and submits every file not yet submitted "
    "(cron from BATCH_PIPELINE_SUBMIT_CRON, default 02:00 UTC).",
)
def inbox_schedule(context: dg.ScheduleEvaluationContext, pipeline: PipelineSettings):
    instance = context.instance
    known = set(instance.get_dynamic_partitions(input_files.name))
    new, _ = pipeline.layout().new_inputs(
        known, settle_seconds=pipeline.inbox_settle_seconds, now=time.time()
    )
    if new:
        # Schedules cannot return partition requests; adding through the instance is the same.
        instance.add_dynamic_partitions(input_files.name, new)
    names = sorted(known | set(new))
    status = (
        instance.get_status_by_partition(dg.AssetKey("submitted_batches"), names, input_files) or {}
    )
    waiting = [n for n in names if status.get(n) is None]
    if not waiting:
        return dg.SkipReason("nothing waiting in the inbox")
    return [dg.RunRequest(partition_key=n, run_key=f"submit:{n}") for n in waiting]
