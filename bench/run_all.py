"""Run every benchmark (issues 8 and 9) in order, print each one's table, then the goals missed.

Each script runs in its own Python process with this interpreter; its output is shown as it
comes. A goal missed is a figure, not a failure: the exit status is non-zero only when a script
itself fails (an exception, a wrong row count). Usage:

    python bench/run_all.py                 # make bench: the full sizes (several minutes)
    python bench/run_all.py --quick         # make bench-quick: small sizes, a CI smoke run
    python bench/run_all.py poll e2e        # only some of: inputs tables results poll e2e store daemon curator
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# In the order of the pipeline: what each script measures.
BENCHMARKS = {
    "inputs": ("bench_inputs.py", "input validation and sharding vs a bare JSON-parse floor"),
    "tables": ("bench_tables.py", "a Parquet table + template to shards vs a read + dumps floor"),
    "results": ("bench_results.py", "result files to Parquet vs pandas baseline and pyarrow floor"),
    "poll": ("bench_poll.py", "a status sweep over 1,000 in-flight batches vs sequential"),
    "e2e": ("bench_e2e.py", "100,000 requests from file drop to Parquet on the emulator"),
    "store": ("bench_store.py", "manifests a status tick reads, local disk and S3 (moto)"),
    "daemon": (
        "bench_daemon.py",
        "inbox to Parquet under the real Dagster daemon, one file and a burst",
    ),
    "curator": ("bench_curator.py", "batch-pipeline run vs bespokelabs-curator, side by side"),
}
# How the scripts mark a goal's verdict at the end of a line.
MET, MISSED = "met", "MISSED"


def run_one(name: str, quick: bool) -> tuple[int, float, list[str] | None]:
    """Run one benchmark script, echoing its output; its exit code, seconds and missed goals
    (None when it printed no goal verdict at all)."""
    script, what = BENCHMARKS[name]
    command = [sys.executable, str(BENCH_DIR / script), *(["--quick"] if quick else [])]
    print(f"\n=== {name}: {what}\n$ {' '.join(command)}", flush=True)
    started = time.monotonic()
    missed, verdicts = [], 0
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            print(line, end="", flush=True)
            if MISSED in line:
                missed.append(line.strip())
            verdicts += MISSED in line or line.rstrip().endswith(MET)
    return child.returncode, time.monotonic() - started, missed if verdicts else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{' '.join(BENCHMARKS)}")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from {' '.join(BENCHMARKS)})")
    names = args.names or list(BENCHMARKS)
    outcomes = {name: run_one(name, args.quick) for name in names}

    print("\n=== summary" + (" (quick mode: indicative only)" if args.quick else ""))
    for name, (code, seconds, missed) in outcomes.items():
        state = "ok" if code == 0 else f"FAILED (exit {code})"
        if missed is None:
            goals = "prints no goal verdicts: compare its table with bench/README.md"
        else:
            goals = f"{len(missed)} goal(s) missed" if missed else "no goal missed"
        print(f"{name:<8} {seconds:>7.1f} s  {state:<18} {goals}")
        for line in missed or []:
            print(f"           {line}")
    return 0 if all(code == 0 for code, _, _ in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
