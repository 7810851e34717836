"""An upstream asset as an instance's input: each materialization of `source` becomes a table in
the inbox, which the inbox sensor then takes like a dropped file (one orchestration path).

The source sensor reads the upstream's materializations after the storage id in its cursor and
requests one source run per materialization. The run loads that materialization's value through
the upstream's own IO manager (for the partition it was of) and writes it into the inbox as
`<asset>-<partition>-s<storage id>.parquet`, where the instance's template renders it.
"""

import re

import dagster as dg
from pydantic import Field

from batch_pipeline.inputs.table import write_table
from batch_pipeline.integration.jobs import STEP_TAG
from batch_pipeline.integration.names import PIPELINE_TAG, PipelineNames
from batch_pipeline.integration.resources import DataRootResource
from batch_pipeline.integration.sensors import SENSOR_STATUS
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.ledger.layout import TABLE_SUFFIX

SOURCE_PAGE = 100  # materializations taken per tick; the cursor walks a backlog in pages
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class SourceConfig(dg.Config):
    """The upstream materialization a source run writes into the inbox."""

    storage_id: int = Field(description="The materialization's event storage id")
    partition: str | None = Field(default=None, description="Its partition, if any")


def source_key(settings: PipelineSettings) -> dg.AssetKey | None:
    return dg.AssetKey(settings.source.split("/")) if settings.source else None


def source_input_name(key: dg.AssetKey, partition: str | None, storage_id: int) -> str:
    """The inbox name of one upstream materialization: readable, unique, a valid partition."""
    parts = [".".join(key.path), *([partition] if partition else []), f"s{storage_id}"]
    name = _UNSAFE.sub("_", "-".join(parts)).lstrip("_.-") or "source"
    suffix = f"-s{storage_id}"
    return name if len(name) <= 200 else name[: 200 - len(suffix)] + suffix


def build_source_job(settings: PipelineSettings, names: PipelineNames) -> dg.JobDefinition:
    """The job that writes one upstream materialization into the inbox."""
    key = source_key(settings)
    assert key is not None
    data_key = names.data_resource

    @dg.op(name=names.source_op, required_resource_keys={data_key})
    def write_source_table(context: dg.OpExecutionContext, config: SourceConfig) -> None:
        data: DataRootResource = getattr(context.resources, data_key)
        layout = data.layout()
        name = source_input_name(key, config.partition, config.storage_id)
        target = layout.inbox / f"{name}{TABLE_SUFFIX}"
        if target.exists():
            context.log.info(f"{target.name} is already in the inbox")
            return
        value = context.repository_def.load_asset_value(
            key, partition_key=config.partition, instance=context.instance
        )
        rows = write_table(value, target)
        context.log.info(f"{key.to_user_string()} -> inbox/{target.name}: {rows:,} rows")

    @dg.job(
        name=names.source_job,
        executor_def=dg.in_process_executor,
        tags={PIPELINE_TAG: settings.name, STEP_TAG: "source"},
        description=f"Write one materialization of {key.to_user_string()} into the inbox as a "
        "table the template renders.",
    )
    def source_job() -> None:
        write_source_table()

    return source_job


def build_source_sensor(
    settings: PipelineSettings, names: PipelineNames, job: dg.JobDefinition
) -> dg.SensorDefinition:
    """New materializations of the source asset get a source run each. The first evaluation
    takes only the latest one, so turning the sensor on never submits the asset's history."""
    key = source_key(settings)
    assert key is not None
    chosen = settings.sensors.source

    @dg.sensor(
        name=names.source_sensor,
        job=job,
        minimum_interval_seconds=chosen.interval_seconds,
        default_status=SENSOR_STATUS[chosen.running],
        description=f"Each new materialization of {key.to_user_string()} becomes a table in "
        "the inbox (the first evaluation takes the latest one only).",
    )
    def source_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
            limit=1 if after is None else SOURCE_PAGE,
            ascending=after is not None,
        )
        if not found.records:
            return dg.SensorResult(skip_reason=f"no new materialization of {key.to_user_string()}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"source:{record.storage_id}",
                    run_config=dg.RunConfig(
                        ops={
                            names.source_op: SourceConfig(
                                storage_id=record.storage_id, partition=record.partition_key
                            )
                        }
                    ),
                )
                for record in found.records
            ],
            cursor=str(max(record.storage_id for record in found.records)),
        )

    return source_sensor
