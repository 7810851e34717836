"""Run the pipeline over the sample files this package ships, on the embedded gateway emulator.

Works from any directory: the samples are copied into DATA_DIR/inbox/ (those already there are
kept), and everything the demo writes stays under DATA_DIR, which it prints: the emulator's state
in .emulator/ (running the demo again reuses the batches it made), results/, errors/, logs/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import batch_pipeline
from batch_pipeline.cli import add_data_dir_argument

SAMPLES = Path(batch_pipeline.__file__).parent / "samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser, default="data")


def place_samples(inbox: Path) -> list[Path]:
    """The shipped samples (a table with its template) in `inbox`, copying those missing."""
    inbox.mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.iterdir()):
        if not (inbox / sample.name).exists():
            shutil.copyfile(sample, inbox / sample.name)
    return [inbox / s.name for s in sorted(SAMPLES.iterdir()) if not s.name.endswith(".yaml")]


def run(args: argparse.Namespace) -> int:
    from batch_pipeline.cli.display import Display
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
    root = Path(str(root)).resolve()
    samples = place_samples(root / "inbox")
    print(f"demo folder: {root} (samples in {root / 'inbox'})")
    config = EmulatorConfig(port=0, state_dir=root / ".emulator")
    with EmbeddedEmulator(config) as emulator:
        print(f"embedded gateway emulator at {emulator.base_url}")
        with (
            open_driver(
                command="demo", gateway_url=emulator.base_url, data_dir=str(root)
            ) as driver,
            Display() as display,
        ):
            summary = driver.run(samples, progress=display.line, watch=display.watch)
    print(summary.render())
    return summary.exit_code
