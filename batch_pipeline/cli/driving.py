"""Open a driver over the loaded definitions a command names (-m/-w/--pipeline), with its
--gateway and --data-dir overrides, on the Dagster instance in $DAGSTER_HOME or an ephemeral one."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from batch_pipeline.integration.driver import PipelineDriver, dagster_instance
from batch_pipeline.integration.loading import load_pipeline


def driver_options(args: argparse.Namespace) -> dict[str, str | None]:
    """What `add_pipeline_arguments` parsed, as `open_driver` takes it."""
    return {
        "module": args.module,
        "workspace": args.workspace,
        "pipeline": args.pipeline,
        "gateway_url": args.gateway,
        "data_dir": args.data_dir,
    }


@contextmanager
def open_driver(
    *,
    module: str | None = None,
    workspace: str | None = None,
    pipeline: str | None = None,
    gateway_url: str | None = None,
    data_dir: str | None = None,
) -> Iterator[PipelineDriver]:
    """The driver of a pipeline of loaded definitions, its settings overridden as given."""
    import dagster as dg

    # Dagster's notes on preview features are for pipeline authors, not for this command's user.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    defs, name = load_pipeline(module=module, workspace=workspace, pipeline=pipeline)
    with dagster_instance() as instance:
        # the command prints one line per outcome; Dagster's own run log is in the instance
        yield PipelineDriver(
            defs, name, instance, gateway_url=gateway_url, data_root=data_dir, log_level="CRITICAL"
        )
