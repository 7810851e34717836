"""The `batch-pipeline` command: one sub-command per job, each implemented where its logic lives.

Each sub-command module offers `add_arguments(parser)` and `run(args) -> int`; this file only
wires them, imports them lazily (so `--help` is fast) and turns expected failures into one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import MutableMapping, Sequence

# Arrow's allocator for the command's process unless ARROW_DEFAULT_MEMORY_POOL names one: the C
# library's malloc gives the memory of converted blocks back, where mimalloc (pyarrow's default)
# keeps ~70 MB more resident at no gain in speed (bench/bench_results.py, issue 18)
ARROW_MEMORY_POOL = "system"

# Python collects young objects every 700 container allocations; starting a command builds a
# large, long-lived heap (Dagster's modules, the loaded definitions), and collecting it that
# often while it grows spent 0.2-0.4 s of a 2.5 s run of 5,000 requests at no gain in peak RSS
# (bench/bench_e2e.py, issue 18). The command's process collects every 10,000 instead.
GC_YOUNG_THRESHOLD = 10_000

# name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "emulator": ("batch_pipeline.emulator.cli", "run the local Bifrost-compatible gateway"),
    "validate": ("batch_pipeline.cli.validate", "check input files; report FILE:LINE: reason"),
    "results-to-parquet": (
        "batch_pipeline.cli.convert",
        "convert provider result files to results.parquet and errors.parquet",
    ),
    "run": ("batch_pipeline.cli.run", "run the whole pipeline over FILE... in the foreground"),
    "demo": (
        "batch_pipeline.cli.demo",
        "run the pipeline over the samples on the embedded gateway",
    ),
    "ui": (
        "batch_pipeline.cli.ui",
        "open the Dagster UI with the embedded gateway emulator running",
    ),
    "retry": ("batch_pipeline.cli.retry", "write the next retry wave of a file into the inbox"),
    "cancel": ("batch_pipeline.cli.cancel", "cancel a file's in-flight batches"),
}


def add_data_dir_argument(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """`--data-dir`, the same for every sub-command that reads or writes a data root."""
    shown = default or "the pipeline's own data_root"
    parser.add_argument(
        "--data-dir",
        default=default,
        type=_data_dir,
        metavar="DIR",
        help=f"data root: a folder or s3://bucket/prefix (default: {shown})",
    )


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Which loaded definitions and which pipeline instance a command drives, and the two
    settings it may override: the gateway URL and the data root."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-m",
        "--module",
        metavar="MODULE",
        help="load the definitions of this Python module (default: this package's own)",
    )
    where.add_argument(
        "-w", "--workspace", metavar="WORKSPACE", help="load the locations of this workspace.yaml"
    )
    parser.add_argument(
        "--pipeline",
        metavar="NAME",
        help="the pipeline instance to drive (default: the only one there is)",
    )
    parser.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help="Bifrost base URL instead of the instance's (its keys still come from the "
        "variables the instance names, BIFROST_API_KEY and BIFROST_VIRTUAL_KEY by default)",
    )
    add_data_dir_argument(parser)


def _data_dir(text: str) -> str:
    """The --data-dir text when it names a usable data root; else a one-line usage error."""
    from batch_pipeline.ledger.storage import StorageError, data_root

    try:
        data_root(text)
    except StorageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="batch-pipeline",
        description="Turn JSONL files of LLM requests into Parquet results and errors "
        "through a Bifrost gateway's batch API.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from batch_pipeline.inputs.workers import configured_workers

    try:
        configured_workers()  # a bad setting is a usage error here, not a traceback mid-run
    except ValueError as exc:
        parser.error(str(exc))
    from batch_pipeline.errors import EXIT_FAILED, BatchPipelineError, cause_of

    stop_on_sigterm()
    prefix = f"batch-pipeline {args.command}"
    try:
        return int(args._run(args) or 0)
    except (BatchPipelineError, OSError) as exc:  # expected failures: one line, no traceback
        found = cause_of(exc, "", doing=f"running {prefix}")
        if found is None and not isinstance(exc, BatchPipelineError):
            return _unexpected(prefix, exc)
        print(f"{prefix}: {found.message if found else exc}", file=sys.stderr)
        return found.exit_code if found else EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _unexpected(prefix, exc)


def stop_on_sigterm() -> None:
    """SIGTERM stops a command as Ctrl-C does: the same clean-up (children stopped, files
    closed), then exit 130."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _unexpected(prefix: str, exc: BaseException) -> int:
    """A bug, not a cause: its traceback to the command's log file when it has one (and one line
    naming it here), else to the terminal."""
    import traceback

    from batch_pipeline.cli import logs

    log = logs.active()
    if log is None:
        raise exc
    with open(log, "a", encoding="utf-8") as out:
        traceback.print_exception(exc, file=out)
    detail = " ".join(str(exc).split())[:300]
    print(f"{prefix}: {type(exc).__name__}: {detail} (traceback in {log})", file=sys.stderr)
    return 1


def console() -> None:
    """The `batch-pipeline` console script: `main`, then `exit_now`."""
    use_arrow_memory_pool(os.environ)
    collect_young_objects_less_often()
    exit_now(main())


def collect_young_objects_less_often() -> None:
    """Set this process's young-generation GC threshold to GC_YOUNG_THRESHOLD (a command's own
    process only: a library does not tune the garbage collector of a process it does not own)."""
    import gc

    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def use_arrow_memory_pool(environ: MutableMapping[str, str]) -> None:
    """Choose ARROW_MEMORY_POOL for this process and its children unless one is chosen already;
    pyarrow reads the variable once, when it is first imported (the commands import it later)."""
    environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ARROW_MEMORY_POOL)


def exit_now(code: int) -> None:
    """End the process once a command is done: logs and output flushed, then out at once.
    Everything a command writes is closed and published before it returns; what Python would
    still do at exit is tear down the hundreds of modules Dagster imports, most of a second
    spent for nothing."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
