"""`batch-pipeline retry NAME`: write the next retry wave of a file into the inbox."""

from __future__ import annotations

import argparse
import sys

from batch_pipeline.cli import add_data_dir_argument
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.operations.retry import RetryError, write_retry_wave


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", help="the input file (partition) whose errors to retry, e.g. reviews"
    )
    add_data_dir_argument(parser)
    parser.add_argument(
        "--include-non-retryable",
        action="store_true",
        help="also retry validation and 4xx errors (they usually fail again)",
    )
    parser.add_argument(
        "--max-attempts", type=int, default=3, help="attempts per request (default 3)"
    )


def run(args: argparse.Namespace) -> int:
    """`batch-pipeline retry NAME`: write the next retry wave into the inbox."""
    from batch_pipeline.ledger.layout import LayoutError

    try:
        wave = write_retry_wave(
            DataLayout.at(args.data_dir),
            args.name,
            include_non_retryable=args.include_non_retryable,
            max_attempts=args.max_attempts,
        )
    except (RetryError, LayoutError) as exc:
        print(f"batch-pipeline retry: {exc}", file=sys.stderr)
        return 1
    if wave is None:
        print(f"{args.name}: nothing to retry")
    else:
        verb = "wrote" if wave.created else "already there:"
        print(f"{verb} {wave.path} ({wave.requests} requests, attempt {wave.attempt})")
    return 0
