"""Convert provider result files to DIR/results.parquet and DIR/errors.parquet, no gateway needed.

OUTPUT_JSONL holds OpenAI batch output lines or Bifrost /results items, one per line (.gz
accepted); every line becomes exactly one row of results or errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROG = "batch-pipeline results-to-parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's arguments."""
    parser.add_argument("output_jsonl", metavar="OUTPUT_JSONL", type=Path, help="result lines")
    parser.add_argument(
        "--error-file",
        metavar="ERROR_JSONL",
        type=Path,
        help="the batch's error file (OpenAI puts failed requests there)",
    )
    parser.add_argument(
        "--out", metavar="DIR", type=Path, required=True, help="folder for the two Parquet files"
    )
    parser.add_argument(
        "--provider", metavar="P", help="provider name for the provider column (e.g. openai)"
    )


def run(args: argparse.Namespace) -> int:
    """Convert; print a one-line summary, or one-line errors (exit 2 for a missing input)."""
    inputs = [args.output_jsonl] + ([args.error_file] if args.error_file else [])
    missing = [path for path in inputs if not path.is_file()]
    for path in missing:
        print(f"{path}: no such file", file=sys.stderr)
    if missing:
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"{args.out}: exists and is not a directory", file=sys.stderr)
        return 2

    from batch_pipeline.results.collect import results_to_parquet

    started = time.perf_counter()
    try:
        stats = results_to_parquet(
            args.output_jsonl, args.error_file, args.out, provider=args.provider
        )
    except OSError as exc:
        # A failed rename names the temp file first; the target (filename2) is what users know.
        path = exc.filename2 or exc.filename or args.out
        print(f"{PROG}: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    stages = ", ".join(f"{stage} {count}" for stage, count in sorted(stats.errors_by_stage.items()))
    print(
        f"wrote {stats.results_rows} results and {stats.errors_rows} errors"
        + (f" ({stages})" if stages else "")
        + f" to {args.out / 'results.parquet'} and {args.out / 'errors.parquet'}"
        + f" in {elapsed:.2f} s"
    )
    return 0
