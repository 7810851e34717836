"""Benchmark: provider result files -> results/errors Parquet (issue 8), ours vs baseline vs floor.

ours      batch_pipeline.results.results_to_parquet (the CLI and the collect asset's code)
baseline  pandas.read_json(lines=True) + json_normalize + to_parquet, per file
floor     pyarrow.json.read_json + pyarrow.parquet.write_table, per file (C++, multithreaded,
          no classification; the fastest way to get the same bytes into Parquet at all)

Each variant runs in its own Python process on the same seeded files (bench/results_data.py),
so peak RSS is that process's own (ru_maxrss, imports included) and runs cannot warm each other.
Times cover the conversion only, not interpreter start-up and imports. Goals from issue 8 are
printed beside the figures. Usage:

    python bench/bench_results.py            # 100k and 1M lines (generates ~1.4 GB once)
    python bench/bench_results.py --quick    # 20k lines, a CI smoke run
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

BENCH_DIR = Path(__file__).resolve().parent
VARIANTS = ("ours", "baseline", "floor")
GOAL_VS_BASELINE = 5.0  # at least this many times faster than the baseline
GOAL_VS_FLOOR = 2.0  # at most this many times the floor's time
GOAL_RSS_MB = 300.0
GOAL_RSS_GROWTH = 0.10  # "flat": at most 10% more peak RSS from the small to the large run


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


def run_variant(variant: str, output: Path, errors: Path, work: Path) -> dict[str, float]:
    """Run a variant in a fresh interpreter and return its measurements."""
    out_dir = work / f"out-{variant}"
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", variant, str(output), str(errors), str(out_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"bench: {variant} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_files(work: Path, lines: int, seed: int) -> tuple[Path, Path]:
    """The generated output/error files for this size and seed (generated once, then reused)."""
    sys.path.insert(0, str(BENCH_DIR))
    from results_data import generate

    output = work / f"output-{lines}-seed{seed}.jsonl"
    errors = work / f"errors-{lines}-seed{seed}.jsonl"
    if not (output.exists() and errors.exists()):
        print(f"generating {lines:,} result lines (seed {seed}) in {work} ...", flush=True)
        generate(output.with_suffix(".tmp"), errors.with_suffix(".tmp"), lines, seed=seed)
        output.with_suffix(".tmp").rename(output)
        errors.with_suffix(".tmp").rename(errors)
    return output, errors


def best_of(repeat: int, variant: str, output: Path, errors: Path, work: Path) -> dict:
    runs = [run_variant(variant, output, errors, work) for _ in range(repeat)]
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

    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"pyarrow {pyarrow.__version__}, {platform.system()} {platform.release()}"
    )


JUDGED_FROM_LINES = 1_000_000  # the goals are stated for this size; smaller runs are smoke tests


def verdict(ok: bool, lines: int = JUDGED_FROM_LINES) -> str:
    if lines < JUDGED_FROM_LINES:
        return "not judged"
    return "met" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20k lines only (CI smoke)")
    parser.add_argument("--lines", type=int, help="size of the large run (default 1,000,000)")
    parser.add_argument("--small", type=int, default=100_000, help="size of the small run")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="best of N for ours and floor")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="the baseline needs ~16 GB at 1M"
    )
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / "out")
    parser.add_argument(
        "--worker", nargs=4, metavar=("VARIANT", "OUTPUT", "ERRORS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.worker:
        variant, output, errors, out_dir = args.worker
        print(json.dumps(convert(variant, Path(output), Path(errors), Path(out_dir))))
        return 0

    large = args.lines or (20_000 if args.quick else 1_000_000)
    sizes = [large] if args.quick or args.small >= large else [args.small, large]
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, int, float, dict]] = []
    for size in sizes:
        output, errors = ensure_files(work, size, args.seed)
        megabytes = (output.stat().st_size + errors.stat().st_size) / 1e6
        variants = (
            ["ours"]
            if size != large
            else [v for v in VARIANTS if not (v == "baseline" and args.skip_baseline)]
        )
        for variant in variants:
            repeat = 1 if variant == "baseline" else args.repeat
            print(f"running {variant} on {size:,} lines ...", flush=True)
            result = best_of(repeat, variant, output, errors, work)
            if result["rows"] != size and variant == "ours":
                raise SystemExit(f"bench: ours wrote {result['rows']} rows for {size} lines")
            rows.append((variant, size, megabytes, result))

    report(rows, large, args.seed)
    return 0


def report(rows: list[tuple[str, int, float, dict]], large: int, seed: int) -> None:
    """Print the table and the goals with their verdicts."""
    at_large = {variant: result for variant, size, _, result in rows if size == large}
    baseline = at_large.get("baseline", {}).get("seconds")
    floor = at_large["floor"]["seconds"]
    print()
    print(f"Result conversion to Parquet (seed {seed}); machine: {machine()}")
    header = (
        f"{'variant':<9} {'lines':>10} {'MB':>7} {'time s':>8} {'vs baseline':>12} "
        f"{'vs floor':>9} {'lines/s':>10} {'MB/s':>7} {'peak RSS MB':>12}"
    )
    print(header)
    print("-" * len(header))
    for variant, size, megabytes, result in rows:
        seconds = result["seconds"]
        versus_baseline = f"{baseline / seconds:.1f}x" if baseline and size == large else "-"
        versus_floor = f"{seconds / floor:.2f}x" if size == large else "-"
        print(
            f"{variant:<9} {size:>10,} {megabytes:>7.0f} {seconds:>8.2f} {versus_baseline:>12} "
            f"{versus_floor:>9} {size / seconds:>10,.0f} {megabytes / seconds:>7.1f} "
            f"{result['peak_rss_mb']:>12.0f}"
        )
    ours = at_large["ours"]
    ours_runs = [result for variant, _, _, result in rows if variant == "ours"]
    print()
    print("Goals (issue 8, stated for 1,000,000 lines):")
    if large < 1_000_000:
        print(
            f"  (indicative only at {large:,} lines: fixed start-up costs such as pyarrow's "
            "first-use imports dominate small runs)"
        )
    if baseline:
        speedup = baseline / ours["seconds"]
        print(
            f"  >= {GOAL_VS_BASELINE:.0f}x faster than baseline: {speedup:.1f}x  {verdict(speedup >= GOAL_VS_BASELINE, large)}"
        )
    else:
        print("  >= 5x faster than baseline: not measured (--skip-baseline)")
    ratio = ours["seconds"] / floor
    print(
        f"  <= {GOAL_VS_FLOOR:.0f}x the floor: {ratio:.2f}x  {verdict(ratio <= GOAL_VS_FLOOR, large)}"
    )
    peak = max(result["peak_rss_mb"] for result in ours_runs)
    print(f"  peak RSS < {GOAL_RSS_MB:.0f} MB: {peak:.0f} MB  {verdict(peak < GOAL_RSS_MB, large)}")
    if len(ours_runs) > 1:
        small, big = ours_runs[0]["peak_rss_mb"], ours_runs[-1]["peak_rss_mb"]
        growth = big / small - 1
        print(
            f"  RSS flat from small to large run (<= {GOAL_RSS_GROWTH:.0%} growth): "
            f"{small:.0f} -> {big:.0f} MB ({growth:+.0%})  {verdict(growth <= GOAL_RSS_GROWTH, large)}"
        )


if __name__ == "__main__":
    sys.exit(main())
