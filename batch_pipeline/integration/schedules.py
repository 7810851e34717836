"""A schedule that submits everything waiting in an instance's inbox at a set time (stopped by
default): for teams that batch a day's files into the night."""

import time

import dagster as dg

from batch_pipeline.integration.jobs import PipelineJobs
from batch_pipeline.integration.names import PipelineNames
from batch_pipeline.integration.resources import DataRootResource
from batch_pipeline.integration.settings import PipelineSettings

_RUNNING = {True: dg.DefaultScheduleStatus.RUNNING, False: dg.DefaultScheduleStatus.STOPPED}


def build_inbox_schedule(
    settings: PipelineSettings,
    names: PipelineNames,
    partitions: dg.DynamicPartitionsDefinition,
    jobs: PipelineJobs,
) -> dg.ScheduleDefinition:
    """Registers new inbox files and submits every file not submitted yet."""
    data_key = names.data_resource
    schedule = settings.schedule

    @dg.schedule(
        name=names.inbox_schedule,
        job=jobs.submit,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=_RUNNING[schedule.running],
        required_resource_keys={data_key},
        description=f"Registers new inbox files and submits every file not yet submitted "
        f"({schedule.cron}, {schedule.timezone}).",
    )
    def inbox_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.SkipReason | list[dg.RunRequest]:
        data: DataRootResource = getattr(context.resources, data_key)
        instance = context.instance
        known = set(instance.get_dynamic_partitions(names.partitions))
        new, _ = data.layout().new_inputs(
            known,
            settle_seconds=settings.inputs.settle_seconds,
            now=time.time(),
            ready=settings.inputs.complete_when,
        )
        if new:
            # Schedules cannot return partition requests; adding through the instance is the same.
            instance.add_dynamic_partitions(names.partitions, new)
        every = sorted(known | set(new))
        status = instance.get_status_by_partition(names.submitted_batches, every, partitions) or {}
        waiting = [n for n in every if status.get(n) is None]
        if not waiting:
            return dg.SkipReason("nothing waiting in the inbox")
        return [dg.RunRequest(partition_key=n, run_key=f"submit:{n}") for n in waiting]

    return inbox_schedule
