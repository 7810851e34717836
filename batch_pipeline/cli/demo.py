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
    add_data_dir_argument(parser, default="data")


def run(args: argparse.Namespace) -> int:
    from batch_pipeline.cli.driving import open_driver
    from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig
    from batch_pipeline.ledger.layout import DataLayout
    from batch_pipeline.ledger.storage import is_local

    layout = DataLayout.at(args.data_dir)
    root = layout.root
    if not is_local(root):
        print(
            "batch-pipeline demo: needs a local --data-dir (use `run` for s3://)", file=sys.stderr
        )
        return 2
    samples = [Path(p) for p in layout.inbox_files() if is_local(p)]
    if not samples:
        print(f"batch-pipeline demo: no sample files in {layout.inbox}", file=sys.stderr)
        return 1
    config = EmulatorConfig(port=0, state_dir=root / ".emulator")
    with EmbeddedEmulator(config) as emulator:
        print(f"embedded gateway emulator at {emulator.base_url}")
        with open_driver(gateway_url=emulator.base_url, data_dir=str(root)) as driver:
            summary = driver.run(samples)
    print(summary.render())
    return 0 if summary.ok else 1
