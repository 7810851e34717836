"""`batch-pipeline cancel NAME`: cancel a file's in-flight batches."""

from __future__ import annotations

import argparse
import os
import sys

from batch_pipeline.cli import add_data_dir_argument
from batch_pipeline.gateway import BifrostClient
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.cancel import CancelError, cancel_partition


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the input file (partition) to cancel, e.g. reviews")
    add_data_dir_argument(parser)
    parser.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help="Bifrost base URL (default: $BIFROST_BASE_URL); the key comes from $BIFROST_API_KEY",
    )


def run(args: argparse.Namespace) -> int:
    """`batch-pipeline cancel NAME`: cancel the file's in-flight batches."""
    from batch_pipeline.gateway import GatewayError
    from batch_pipeline.ledger.layout import DataLayout, LayoutError

    gateway = args.gateway or os.environ.get("BIFROST_BASE_URL")
    if not gateway:
        print("batch-pipeline cancel: give --gateway or set BIFROST_BASE_URL", file=sys.stderr)
        return 2
    try:
        layout = DataLayout.at(args.data_dir)
        store = ManifestStore(layout.root / "batches")
        layout.manifest(args.name)  # checks the name
        with BifrostClient(gateway, api_key=os.environ.get("BIFROST_API_KEY") or None) as client:
            report = cancel_partition(client, store, args.name)
    except (CancelError, GatewayError, LayoutError) as exc:
        print(f"batch-pipeline cancel: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.name}: cancel requested for {len(report.cancelled)} batch(es), "
        f"{len(report.already_finished)} had finished, "
        f"{len(report.never_submitted)} shard(s) will not be submitted"
    )
    return 0
