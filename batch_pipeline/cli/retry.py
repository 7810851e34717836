"""`batch-pipeline retry NAME`: write the next retry wave of a file into the pipeline's inbox,
with the pipeline's retry job (the inbox sensor, or `run`, takes it from there)."""

from __future__ import annotations

import argparse
import sys

from batch_pipeline.cli import add_pipeline_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", help="the input file (partition) whose errors to retry, e.g. reviews"
    )
    add_pipeline_arguments(parser)
    parser.add_argument(
        "--include-non-retryable",
        action="store_true",
        help="also retry validation and 4xx errors (they usually fail again)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        help="attempts per request (default: the pipeline's collect.max_retry_attempts)",
    )


def run(args: argparse.Namespace) -> int:
    from batch_pipeline.cli.driving import driver_options, open_driver
    from batch_pipeline.errors import EXIT_CODES, EXIT_FAILED
    from batch_pipeline.ledger.layout import check_name

    check_name(args.name)
    config = {"include_non_retryable": args.include_non_retryable}
    if args.max_attempts is not None:
        config["max_attempts"] = args.max_attempts
    with open_driver(**driver_options(args)) as driver:
        outcome = driver.execute(
            driver.names.retry_job,
            args.name,
            run_config={"ops": {driver.names.retry_op: {"config": config}}},
        )
    if not outcome.success:
        print(f"batch-pipeline retry: {outcome.message}", file=sys.stderr)
        return EXIT_CODES.get(outcome.cause, EXIT_FAILED)
    wave = outcome.outputs
    if not wave.get("requests"):
        print(f"{args.name}: nothing to retry")
    else:
        verb = "wrote" if wave["created"] else "already there:"
        print(f"{verb} {wave['path']} ({wave['requests']} requests, attempt {wave['attempt']})")
    return 0
