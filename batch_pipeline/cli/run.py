"""Run the whole flow over INPUT... in the foreground, through the loaded Dagster definitions.

Each input is copied into the pipeline's inbox and submitted with its submit job; then its
status sensor is evaluated through Dagster, and the runs it requests (collect, and submit again
for shards that waited on queue limits) are executed here, until every input is collected; then
a summary naming each failure's cause in one line, and the exit code of the first cause
(`batch_pipeline.errors.EXIT_CODES`). Runs are recorded in the Dagster instance at $DAGSTER_HOME
when it is set (so they show in the UI), else in an ephemeral one; Dagster's event log goes to
the log file the summary names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from batch_pipeline.cli import add_pipeline_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="INPUT",
        help="input JSONL files (.jsonl, .jsonl.gz), or tables (.parquet file or folder)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        metavar="FILE",
        help="the request template (YAML) the tables' rows take (default: the pipeline's)",
    )
    add_pipeline_arguments(parser)
    parser.add_argument(
        "--on-invalid",
        choices=["reject", "skip"],
        default=None,
        help="reject: a file with invalid lines is not submitted; skip: invalid lines become "
        "stage=input errors (default: the pipeline's inputs.on_invalid)",
    )
    parser.add_argument(
        "--default-provider",
        default=None,
        help="provider for unprefixed models (default: the pipeline's inputs.default_provider)",
    )
    parser.add_argument(
        "--resubmit",
        action="store_true",
        default=None,
        help="submit (and pay again) content already registered under another file name "
        "(default: the pipeline's inputs.on_duplicate)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, metavar="SECONDS", help="status poll period"
    )
    parser.add_argument(
        "--timeout", type=float, default=24 * 3600.0, metavar="SECONDS", help="give up after this"
    )


def batch_input_config(args: argparse.Namespace) -> dict[str, str | bool]:
    """The per-run config of batch_input that the options ask for."""
    chosen = {
        "on_invalid": args.on_invalid,
        "default_provider": args.default_provider,
        "resubmit": getattr(args, "resubmit", None),
    }
    return {k: v for k, v in chosen.items() if v}


def run(args: argparse.Namespace) -> int:
    from batch_pipeline.cli.display import Display
    from batch_pipeline.cli.driving import driver_options, open_driver

    with open_driver(**driver_options(args)) as driver, Display() as display:
        summary = driver.run(
            [Path(f) for f in args.files],
            batch_input=batch_input_config(args),
            template=args.template,
            poll_interval=args.poll_interval,
            timeout=args.timeout,
            progress=display.line,
            watch=display.watch,
        )
    print(summary.render())
    return summary.exit_code
