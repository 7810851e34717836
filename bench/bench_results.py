"""Benchmark: provider result files -> results/errors Parquet (issues 8, 18), ours vs baseline vs
floor, on three data shapes: chat completions only, embeddings only, and a mix (10% embeddings).

ours      batch_pipeline.results.results_to_parquet (the CLI and the collect asset's code)
baseline  pandas.read_json(lines=True) + json_normalize + to_parquet, per file
floor     pyarrow.json.read_json + pyarrow.parquet.write_table, per file (C++, multithreaded,
          no classification; the fastest way to get the same bytes into Parquet at all)

Each variant runs in its own Python process on the same seeded files (bench/results_data.py),
so peak RSS is that process's own (ru_maxrss, imports included) and runs cannot warm each other.
All three use the Arrow allocator the `batch-pipeline` command uses (ARROW_DEFAULT_MEMORY_POOL,
`system` unless set; the machine line names it).
Times cover the conversion only, not interpreter start-up and imports. Goals from issue 18 are
printed beside the figures. Usage:

    python bench/bench_results.py                  # 200k and 1M lines of each shape (~5 GB once)
    python bench/bench_results.py --shapes chat    # one shape
    python bench/bench_results.py --quick          # 20k lines of each shape, a CI smoke run
    python bench/bench_results.py --without-pandas # ours as a base install runs (no pandas)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_common import hide_pandas

BENCH_DIR = Path(__file__).resolve().parent
VARIANTS = ("ours", "baseline", "floor")
GOAL_VS_BASELINE = 8.0  # at least this many times faster than the baseline
GOAL_VS_FLOOR = 1.5  # at most this many times the floor's time
GOAL_RSS_MB = 300.0
GOAL_RSS_GROWTH = 0.10  # "flat": at most 10% more peak RSS from the small to the large run
EMBEDDING_SHARES = {"chat": 0.0, "embeddings": 0.95, "mixed": 0.10}  # of all lines (5% errors)


def convert(variant: str, output: Path, errors: Path, out_dir: Path) -> dict[str, float]:
    """Run one variant in this process; returns seconds, peak RSS and rows written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if variant == "ours":
        from batch_pipeline.results import results_to_parquet

        started = time.perf_counter()
        stats = results_to_parquet(output, errors, out_dir)
        seconds = time.perf_counter() - started
        rows = stats.results_rows + stats.errors_rows
    elif variant == "baseline":
        import pandas as pd

        started = time.perf_counter()
        rows = 0
        for path in (output, errors):
            frame = pd.read_json(path, lines=True, dtype=False)
            flat = pd.json_normalize(frame.to_dict(orient="records"))
            flat.to_parquet(out_dir / f"{path.stem}.parquet")
            rows += len(flat)
            del frame, flat
        seconds = time.perf_counter() - started
    else:
        import pyarrow.json as pa_json
        import pyarrow.parquet as pq

        started = time.perf_counter()
        rows = 0
        for path in (output, errors):
            table = pa_json.read_json(path)
            pq.write_table(table, out_dir / f"{path.stem}.parquet")
            rows += table.num_rows
            del table
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": seconds, "peak_rss_mb": peak_mb, "rows": rows}


def run_variant(
    variant: str, output: Path, errors: Path, work: Path, without_pandas: bool
) -> dict[str, float]:
    """Run a variant in a fresh interpreter and return its measurements."""
    out_dir = work / f"out-{variant}"
    command = [sys.executable, __file__, "--worker", variant, *map(str, (output, errors, out_dir))]
    proc = subprocess.run(
        command + (["--without-pandas"] if without_pandas and variant == "ours" else []),
        capture_output=True,
        text=True,
        check=False,
        env=arrow_environment(),
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"bench: {variant} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def arrow_environment() -> dict[str, str]:
    """This process's environment with the `batch-pipeline` command's Arrow allocator choice."""
    from batch_pipeline.cli import use_arrow_memory_pool

    environ = dict(os.environ)
    use_arrow_memory_pool(environ)
    return environ


def ensure_files(work: Path, lines: int, seed: int, shape: str) -> tuple[Path, Path]:
    """The generated output/error files for this shape, size and seed (generated once)."""
    sys.path.insert(0, str(BENCH_DIR))
    from results_data import generate

    output = work / f"output-{shape}-{lines}-seed{seed}.jsonl"
    errors = work / f"errors-{shape}-{lines}-seed{seed}.jsonl"
    if not (output.exists() and errors.exists()):
        print(f"generating {lines:,} {shape} result lines (seed {seed}) in {work} ...", flush=True)
        share = EMBEDDING_SHARES[shape]
        generate(
            output.with_suffix(".tmp"),
            errors.with_suffix(".tmp"),
            lines,
            seed=seed,
            embedding_share=share,
        )
        output.with_suffix(".tmp").rename(output)
        errors.with_suffix(".tmp").rename(errors)
    return output, errors


def best_of(
    repeat: int, variant: str, output: Path, errors: Path, work: Path, without_pandas: bool
) -> dict:
    runs = [run_variant(variant, output, errors, work, without_pandas) for _ in range(repeat)]
    best = min(runs, key=lambda run: run["seconds"])
    return best | {"peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import pyarrow

    pool = arrow_environment()["ARROW_DEFAULT_MEMORY_POOL"]
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"pyarrow {pyarrow.__version__} (allocator {pool}), {platform.system()} {platform.release()}"
    )


JUDGED_FROM_LINES = 200_000  # the goals are stated for 200k and 1M; smaller runs are smoke tests


def verdict(ok: bool, lines: int) -> str:
    if lines < JUDGED_FROM_LINES:
        return "not judged"
    return "met" if ok else "MISSED"


Row = tuple[str, str, int, float, dict]  # shape, variant, lines, megabytes, measurements


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20k lines only (CI smoke)")
    parser.add_argument("--lines", type=int, help="size of the large run (default 1,000,000)")
    parser.add_argument("--small", type=int, default=200_000, help="size of the small run")
    parser.add_argument("--shapes", default=",".join(EMBEDDING_SHARES), help="comma-separated")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="best of N for ours and floor")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="the baseline needs ~16 GB at 1M"
    )
    parser.add_argument(
        "--baseline-up-to",
        type=int,
        help="run the baseline only on files of at most this many lines (pandas needs ~21 GB "
        "for 1M embeddings)",
    )
    parser.add_argument(
        "--without-pandas",
        action="store_true",
        help="run ours as if pandas were not installed, as in a base install",
    )
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / "out")
    parser.add_argument(
        "--worker", nargs=4, metavar=("VARIANT", "OUTPUT", "ERRORS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.worker:
        if args.without_pandas:
            hide_pandas()
        variant, output, errors, out_dir = args.worker
        print(json.dumps(convert(variant, Path(output), Path(errors), Path(out_dir))))
        return 0

    large = args.lines or (20_000 if args.quick else 1_000_000)
    sizes = [large] if args.quick or args.small >= large else [args.small, large]
    shapes = [shape for shape in args.shapes.split(",") if shape]
    unknown = set(shapes) - set(EMBEDDING_SHARES)
    if unknown:
        raise SystemExit(
            f"bench: unknown shapes {sorted(unknown)}; known: {list(EMBEDDING_SHARES)}"
        )
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for shape in shapes:
        for size in sizes:
            output, errors = ensure_files(work, size, args.seed, shape)
            megabytes = (output.stat().st_size + errors.stat().st_size) / 1e6
            for variant in VARIANTS:
                if variant == "baseline" and (
                    args.skip_baseline or size > (args.baseline_up_to or size)
                ):
                    continue
                repeat = 1 if variant == "baseline" else args.repeat
                print(f"running {variant} on {size:,} {shape} lines ...", flush=True)
                result = best_of(repeat, variant, output, errors, work, args.without_pandas)
                if result["rows"] != size and variant == "ours":
                    raise SystemExit(f"bench: ours wrote {result['rows']} rows for {size} lines")
                rows.append((shape, variant, size, megabytes, result))

    report(rows, args.seed, args.without_pandas)
    return 0


def report(rows: list[Row], seed: int, without_pandas: bool) -> None:
    """Print the table and, per shape and size, the goals with their verdicts."""
    print()
    print(f"Result conversion to Parquet (seed {seed}); machine: {machine()}")
    if without_pandas:
        print("ours ran as if pandas were not installed, as in a base install")
    header = (
        f"{'shape':<11} {'variant':<9} {'lines':>10} {'MB':>7} {'time s':>8} "
        f"{'vs baseline':>12} {'vs floor':>9} {'lines/s':>10} {'peak RSS MB':>12}"
    )
    print(header)
    print("-" * len(header))
    measured = {(shape, variant, size): result for shape, variant, size, _, result in rows}
    for shape, variant, size, megabytes, result in rows:
        seconds = result["seconds"]
        baseline = measured.get((shape, "baseline", size), {}).get("seconds")
        floor = measured[(shape, "floor", size)]["seconds"]
        versus_baseline = f"{baseline / seconds:.1f}x" if baseline else "-"
        print(
            f"{shape:<11} {variant:<9} {size:>10,} {megabytes:>7.0f} {seconds:>8.2f} "
            f"{versus_baseline:>12} {seconds / floor:>8.2f}x {size / seconds:>10,.0f} "
            f"{result['peak_rss_mb']:>12.0f}"
        )
    print()
    print(
        f"Goals (issue 18): <= {GOAL_VS_FLOOR}x the floor, >= {GOAL_VS_BASELINE:.0f}x the "
        f"baseline, peak RSS < {GOAL_RSS_MB:.0f} MB and flat (<= {GOAL_RSS_GROWTH:.0%} growth "
        f"from the smallest to the largest run); judged from {JUDGED_FROM_LINES:,} lines"
    )
    for shape, size in dict.fromkeys((s, n) for s, _, n, _, _ in rows):
        ours = measured[(shape, "ours", size)]
        ratio = ours["seconds"] / measured[(shape, "floor", size)]["seconds"]
        baseline = measured.get((shape, "baseline", size), {}).get("seconds")
        speedup = f"{baseline / ours['seconds']:.1f}x" if baseline else "not measured"
        fast = baseline is None or baseline / ours["seconds"] >= GOAL_VS_BASELINE
        peak = ours["peak_rss_mb"]
        print(
            f"  {shape:<11} {size:>10,}: floor {ratio:.2f}x, baseline {speedup}, RSS {peak:.0f} MB"
            f"  {verdict(ratio <= GOAL_VS_FLOOR and fast and peak < GOAL_RSS_MB, size)}"
        )
    for shape in dict.fromkeys(s for s, _, _, _, _ in rows):
        runs = sorted((n, r["peak_rss_mb"]) for s, v, n, _, r in rows if s == shape and v == "ours")
        if len(runs) > 1:
            growth = runs[-1][1] / runs[0][1] - 1
            print(
                f"  {shape:<11} RSS {runs[0][1]:.0f} -> {runs[-1][1]:.0f} MB ({growth:+.0%})  "
                f"{verdict(growth <= GOAL_RSS_GROWTH, runs[-1][0])}"
            )


if __name__ == "__main__":
    sys.exit(main())
