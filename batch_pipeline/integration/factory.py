"""The one factory: an instance's settings in, its Dagster definitions out.

`BatchPipelineComponent` calls it for a `defs.yaml`; people who do not use YAML call it from
Python. Every name it makes carries the instance's name (`PipelineNames`), so instances and the
user's own definitions merge without a clash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from batch_pipeline.integration.assets import build_assets
from batch_pipeline.integration.checks import build_checks
from batch_pipeline.integration.io_manager import BatchTablesIOManager
from batch_pipeline.integration.jobs import build_jobs
from batch_pipeline.integration.names import PipelineNames
from batch_pipeline.integration.resources import DataRootResource, GatewayResource
from batch_pipeline.integration.schedules import build_inbox_schedule
from batch_pipeline.integration.sensors import build_inbox_sensor, build_status_sensor
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.integration.source import build_source_job, build_source_sensor


def build_pipeline_defs(settings: PipelineSettings | Mapping[str, Any]) -> dg.Definitions:
    """Assets, checks, jobs, sensors, schedule and resources of one pipeline instance.

    defs = dg.Definitions.merge(
        build_pipeline_defs({"name": "tickets", "data_root": "s3://bucket/tickets"}),
        my_own_defs,
    )
    """
    if not isinstance(settings, PipelineSettings):
        settings = PipelineSettings.model_validate(settings)
    names = PipelineNames(settings.name)
    partitions = dg.DynamicPartitionsDefinition(name=names.partitions)
    data = DataRootResource(root=settings.root)
    assets = build_assets(settings, names, partitions)
    checks = build_checks(settings, names, partitions)
    jobs = build_jobs(settings, names, partitions, assets)
    sensors = [
        build_inbox_sensor(settings, names, partitions, jobs),
        build_status_sensor(settings, names, jobs),
    ]
    source_jobs = []
    if settings.source:
        source_job = build_source_job(settings, names)
        source_jobs.append(source_job)
        sensors.append(build_source_sensor(settings, names, source_job))
    return dg.Definitions(
        assets=assets.all,
        asset_checks=checks,
        jobs=[*jobs.all, *source_jobs],
        sensors=sensors,
        schedules=[build_inbox_schedule(settings, names, partitions, jobs)],
        resources={
            names.gateway_resource: GatewayResource.from_settings(settings.gateway),
            names.data_resource: data,
            names.io_manager: BatchTablesIOManager(data=data),
        },
    )
