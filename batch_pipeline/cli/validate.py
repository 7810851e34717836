"""Check inputs without submitting anything: every problem as `FILE:LINE: field: reason` (a
table's as `TABLE: row N (key): reason`).

Prints each problem on its own line, then one summary line per file. Exit status: 0 when every
file is valid, 1 when any file has a problem (a missing or unreadable file counts as a problem:
`FILE: no such file`), 2 on a usage error (bad option value).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `validate`'s arguments."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "exit status: 0 all files valid, 1 any file invalid or unreadable, 2 usage error"
    )
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help=".jsonl or .jsonl.gz, or a .parquet file or folder with --template",
    )
    parser.add_argument(
        "--template",
        type=Path,
        metavar="FILE",
        help="the request template (YAML) that turns each row of a table into a request "
        "(default: the table's own NAME.template.yaml beside it)",
    )
    parser.add_argument(
        "--default-provider",
        metavar="PROVIDER",
        help="provider for models given without a provider/ prefix (e.g. openai)",
    )
    parser.add_argument(
        "--max-problems",
        type=_non_negative,
        default=50,
        metavar="N",
        help="show at most N problems per file (all are counted; default 50)",
    )


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def run(args: argparse.Namespace) -> int:
    """Validate each file in turn; the exit status says whether all were valid."""
    from pydantic import ValidationError

    from batch_pipeline.errors import BatchPipelineError
    from batch_pipeline.inputs.models import InputOptions
    from batch_pipeline.inputs.prepare import validate_file, validate_table
    from batch_pipeline.inputs.template import load_template
    from batch_pipeline.ledger.layout import (
        TABLE_SUFFIX,
        TEMPLATE_SUFFIX,
        LayoutError,
        is_table,
        partition_name,
    )

    try:
        options = InputOptions(
            default_provider=args.default_provider, max_problems=args.max_problems
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        print(
            f"batch-pipeline validate: {error.get('ctx', {}).get('error', error['msg'])}",
            file=sys.stderr,
        )
        return 2
    template = load_template(args.template) if args.template else None
    all_valid = True
    for path in args.files:
        table = is_table(path)
        if not (path.is_file() or (table and path.is_dir())):
            reason = "is a directory, not a file" if path.is_dir() else "no such file"
            print(f"{path}: {reason}")
            all_valid = False
            continue
        sidecar = path.with_name(path.name.removesuffix(TABLE_SUFFIX) + TEMPLATE_SUFFIX)
        if table and template is None and not sidecar.is_file():
            print(f"{path}: a table needs --template FILE or {sidecar.name} beside it")
            all_valid = False
            continue
        try:
            partition_name(path.name)
        except LayoutError as exc:  # the pipeline would refuse it by name: say so up front
            print(f"{path}: {exc}")
            all_valid = False
        try:
            if table:
                chosen = template or load_template(sidecar)
                report = validate_table(path, chosen, options)
            else:
                report = validate_file(path, options)
        except BatchPipelineError as exc:  # a template naming columns the table lacks, ...
            print(exc)
            all_valid = False
            continue
        except OSError as exc:
            print(f"{path}: cannot read ({exc.strerror or exc})")
            all_valid = False
            continue
        for problem in report.problems:
            print(problem)
        hidden = report.total_problems - len(report.problems)
        if hidden > 0:
            print(f"{path}: ... and {hidden} more problem(s) not shown (--max-problems)")
        verdict = "ok" if report.ok else f"INVALID, {report.total_problems} problem(s)"
        notes = f" ({'; '.join(report.notes)})" if report.notes else ""
        print(f"{path}: {verdict}: {report.summary.describe()}{notes}")
        all_valid = all_valid and report.ok
    return 0 if all_valid else 1
