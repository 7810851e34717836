"""`batch-pipeline cancel NAME`: cancel a file's in-flight batches with the pipeline's cancel
job; what finished is kept, and the status sensor collects the rest as `canceled`."""

from __future__ import annotations

import argparse
import sys

from batch_pipeline.cli import add_pipeline_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the input file (partition) to cancel, e.g. reviews")
    add_pipeline_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from batch_pipeline.cli.driving import driver_options, open_driver
    from batch_pipeline.errors import EXIT_CODES, EXIT_FAILED
    from batch_pipeline.ledger.layout import check_name

    check_name(args.name)
    with open_driver(**driver_options(args)) as driver:
        outcome = driver.execute(driver.names.cancel_job, args.name)
    if not outcome.success:
        print(f"batch-pipeline cancel: {outcome.message}", file=sys.stderr)
        return EXIT_CODES.get(outcome.cause, EXIT_FAILED)
    done = outcome.outputs
    print(
        f"{args.name}: cancel requested for {done['cancelled']} batch(es), "
        f"{done['already_finished']} had finished, "
        f"{done['never_submitted']} shard(s) will not be submitted"
    )
    return 0
