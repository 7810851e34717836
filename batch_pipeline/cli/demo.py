"""Run the pipeline over the sample files in data/inbox/ on the embedded gateway emulator.

Nothing leaves the machine and nothing is written outside the data root: the emulator keeps its
state in DATA_DIR/.emulator/, so running the demo again reuses the batches it already made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batch_pipeline.cli import add_data_dir_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)


def run(args: argparse.Namespace) -> int:
    from batch_pipeline.cli.run import RunError, run_files
    from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig
    from batch_pipeline.ledger.layout import DataLayout
    from batch_pipeline.ledger.storage import is_local

    layout = DataLayout.at(args.data_dir)
    if not is_local(layout.root):
        print(
            "batch-pipeline demo: needs a local --data-dir (use `run` for s3://)", file=sys.stderr
        )
        return 2
    samples = list(layout.inbox_files())
    if not samples:
        print(f"batch-pipeline demo: no sample files in {layout.inbox}", file=sys.stderr)
        return 1
    config = EmulatorConfig(port=0, state_dir=Path(layout.root / ".emulator"))
    with EmbeddedEmulator(config) as emulator:
        print(f"embedded gateway emulator at {emulator.base_url}")
        try:
            summary = run_files(samples, gateway_url=emulator.base_url, data_dir=layout.root)
        except RunError as exc:
            print(f"batch-pipeline demo: {exc}", file=sys.stderr)
            return 1
    print(summary.render())
    return 0 if summary.ok else 1
