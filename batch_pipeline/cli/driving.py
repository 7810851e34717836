"""Open a driver over the loaded definitions a command names (-m/-w/--pipeline), with its
--gateway and --data-dir overrides, on the Dagster instance in $DAGSTER_HOME or an ephemeral one;
Dagster's logs and event log go to the command's log file, not to the terminal."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from batch_pipeline.cli import logs
from batch_pipeline.integration.driver import PipelineDriver, dagster_instance
from batch_pipeline.integration.loading import load_pipeline


def driver_options(args: argparse.Namespace) -> dict[str, str | None]:
    """What `add_pipeline_arguments` parsed, as `open_driver` takes it."""
    return {
        "command": args.command,
        "module": args.module,
        "workspace": args.workspace,
        "pipeline": args.pipeline,
        "gateway_url": args.gateway,
        "data_dir": args.data_dir,
    }


@contextmanager
def open_driver(
    *,
    command: str | None = None,
    module: str | None = None,
    workspace: str | None = None,
    pipeline: str | None = None,
    gateway_url: str | None = None,
    data_dir: str | None = None,
) -> Iterator[PipelineDriver]:
    """The driver of a pipeline of loaded definitions, its settings overridden as given."""
    with logs.captured() as log:
        defs, name = load_pipeline(module=module, workspace=workspace, pipeline=pipeline)
        with dagster_instance() as instance:
            driver = PipelineDriver(
                defs,
                name,
                instance,
                gateway_url=gateway_url,
                data_root=data_dir,
                log_level="CRITICAL",
            )
            driver.log_file = log.open(driver.layout.root, command or "batch-pipeline")
            yield driver
