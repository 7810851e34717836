"""Cancelling an input file: every in-flight batch is cancelled, shards not yet submitted never
will be. What finished is kept; collect turns the rest into `canceled` error rows."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from batch_pipeline.cli import add_data_dir_argument
from batch_pipeline.gateway import BifrostClient
from batch_pipeline.manifest import ManifestStore
from batch_pipeline.submit import cancel_and_record

CANCELLED = "cancelled"


@dataclass
class CancelReport:
    cancelled: list[str] = field(default_factory=list)  # batch ids asked to cancel
    already_finished: list[str] = field(default_factory=list)
    never_submitted: list[str] = field(default_factory=list)  # shard ids


def cancel_partition(client: BifrostClient, store: ManifestStore, name: str) -> CancelReport:
    """Cancel what is still running of input file `name` and record it in its manifest."""
    if store.load(name) is None:
        raise FileNotFoundError(f"{name}: nothing was submitted, so there is nothing to cancel")
    report = CancelReport()
    with store.update(name) as current:
        # under the lock, so a submit cannot create what is being cancelled: it checks first
        for record in current.shards.values():
            if record.batch_id is None and record.state == "creating":
                record.cancel_requested = True  # its create may have made a batch: cancel that
            elif record.batch_id is None and not record.terminal:
                record.status, record.terminal, record.waiting = CANCELLED, True, None
                report.never_submitted.append(record.shard_id)
    for record in current.shards.values():
        if record.batch_id is None:
            continue
        if record.terminal or not cancel_and_record(client, store, name, record):
            report.already_finished.append(record.batch_id)
        else:
            report.cancelled.append(record.batch_id)
    return report


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
    from batch_pipeline.layout import DataLayout, LayoutError

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
    except (FileNotFoundError, GatewayError, LayoutError) as exc:
        print(f"batch-pipeline cancel: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.name}: cancel requested for {len(report.cancelled)} batch(es), "
        f"{len(report.already_finished)} had finished, "
        f"{len(report.never_submitted)} shard(s) will not be submitted"
    )
    return 0
