"""Open the Dagster UI on this project, with the embedded gateway emulator running.

Serves this package's own code location (its `demo` instance over --data-dir), whose inbox
sensor runs: drop a file into the inbox and watch it go through. Uses $DAGSTER_HOME (make ui
points it at the git-ignored .dagster_home/) so runs survive a restart. Needs the `ui` extra
(dagster-webserver) and, for the embedded gateway, the `emulator` extra.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from batch_pipeline.cli import add_data_dir_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="UI port (default: 3000)")
    add_data_dir_argument(parser, default="data")
    parser.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help="use this gateway instead of starting the embedded emulator",
    )


def run(args: argparse.Namespace) -> int:
    import importlib.util
    from contextlib import ExitStack

    from batch_pipeline.ledger.storage import data_root, is_local

    if importlib.util.find_spec("dagster_webserver") is None:
        print("batch-pipeline ui: install batch-pipeline[ui] for the Dagster UI", file=sys.stderr)
        return 2
    from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig

    data_dir = data_root(args.data_dir)
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve()))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    # the emulator keeps its state on local disk, beside the data or the Dagster home
    state_dir = (
        data_dir / ".emulator" if is_local(data_dir) else Path(env["DAGSTER_HOME"]) / "emulator"
    )
    with ExitStack() as stack:
        gateway = args.gateway
        if gateway is None:
            config = EmulatorConfig(port=0, state_dir=state_dir)
            gateway = stack.enter_context(EmbeddedEmulator(config)).base_url
            print(f"embedded gateway emulator at {gateway}")
        env["BIFROST_BASE_URL"] = gateway
        env["BATCH_PIPELINE_DATA_ROOT"] = str(data_dir)
        command = [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-m",
            "batch_pipeline.definitions",
            "-p",
            str(args.port),
        ]
        try:
            return subprocess.call(command, env=env)
        except KeyboardInterrupt:
            return 0
