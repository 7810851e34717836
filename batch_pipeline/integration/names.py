"""Every name one pipeline instance makes, derived from its name in one place.

The factory names its objects with these, and the driver (CLI, tests) finds them with the same,
so two instances and the user's own definitions live side by side without a clash.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

# The tag every asset of an instance carries: `tag:batch_pipeline=<name>` selects them in the UI,
# and the driver finds the instances of loaded definitions by it.
PIPELINE_TAG = "batch_pipeline"
# Collect runs carry the storage id of the submission they collect (see integration/progress.py).
SUBMISSION_TAG = "batch_pipeline/submission"


@dataclass(frozen=True)
class PipelineNames:
    """Asset keys, job, sensor, schedule, partitions and resource names of instance `pipeline`."""

    pipeline: str

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.pipeline, asset])

    @property
    def inbox(self) -> dg.AssetKey:
        return self.key("inbox")

    @property
    def batch_input(self) -> dg.AssetKey:
        return self.key("batch_input")

    @property
    def submitted_batches(self) -> dg.AssetKey:
        return self.key("submitted_batches")

    @property
    def batch_results(self) -> dg.AssetKey:
        return self.key("batch_results")

    @property
    def batch_errors(self) -> dg.AssetKey:
        return self.key("batch_errors")

    @property
    def batch_outcomes(self) -> dg.AssetKey:
        return self.key("batch_outcomes")

    def _name(self, what: str) -> str:
        return f"{self.pipeline}_{what}"

    @property
    def partitions(self) -> str:
        return self._name("input_files")

    @property
    def submit_job(self) -> str:
        return self._name("submit")

    @property
    def collect_job(self) -> str:
        return self._name("collect")

    @property
    def alerts_job(self) -> str:
        return self._name("alerts")

    @property
    def retry_job(self) -> str:
        return self._name("retry")

    @property
    def cancel_job(self) -> str:
        return self._name("cancel")

    @property
    def source_job(self) -> str:
        return self._name("source")

    @property
    def alerts_op(self) -> str:
        return self._name("judge_batches")

    @property
    def retry_op(self) -> str:
        return self._name("write_retry_file")

    @property
    def cancel_op(self) -> str:
        return self._name("cancel_batches")

    @property
    def source_op(self) -> str:
        return self._name("write_source_table")

    @property
    def source_sensor(self) -> str:
        return self._name("source_sensor")

    @property
    def inbox_sensor(self) -> str:
        return self._name("inbox_sensor")

    @property
    def status_sensor(self) -> str:
        return self._name("status_sensor")

    @property
    def inbox_schedule(self) -> str:
        return self._name("inbox_schedule")

    @property
    def gateway_resource(self) -> str:
        return self._name("gateway")

    @property
    def data_resource(self) -> str:
        return self._name("data")

    @property
    def io_manager(self) -> str:
        return self._name("io_manager")
