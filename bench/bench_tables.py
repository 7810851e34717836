"""Benchmark of table inputs: a Parquet table and a template to validated shards, against a floor.

For each size it writes a seeded Parquet table (id, title, review, stars), then runs in separate
subprocesses (each its own peak RSS): the floor, which reads the text columns with pyarrow and
`orjson.dumps` one bare request per row (no template, no checks, nothing written); the baseline,
what one writes by hand without this package (pandas reads the table, Jinja2's `render` and
`json.dumps` make each line, one JSONL file written, nothing checked); and `prepare_table`: the
template rendered per row (sandboxed Jinja2), every request validated against provider limits,
keys checked for duplicates, the shards, their index and keys.parquet written. It reports
seconds, rows/s, the ratios and peak RSS. Not a test: nothing here asserts a time.

    python bench/bench_tables.py            # 1M and 10M rows
    python bench/bench_tables.py --quick    # 50k rows, a CI smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import machine, verdict
from bench_inputs import WORDS

MODEL = "openai/gpt-4o-mini"
TEMPLATE = {
    "model": MODEL,
    "key": "id",
    "system": "Classify the review.",
    "prompt": "Title: {{ title }}\n{{ review }}",
    "params": {"max_tokens": 16, "temperature": 0},
}
ROW_GROUP = 100_000
# Goals: rendering, checking and sharding a table is faster than the unchecked hand-written
# baseline, and memory does not follow the table: a 10x larger table may add at most this many
# bytes a row (duplicate-key detection keeps a small digest per row) beyond a fixed slack.
GOAL_VS_BASELINE = 1.0
GOAL_BYTES_PER_ROW, GOAL_SLACK_MIB = 16, 64


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write a table of `rows` reviews (~300 bytes of text each) in row groups, streaming."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    schema = pa.schema(
        [("id", pa.int64()), ("title", pa.string()), ("review", pa.string()), ("stars", pa.int8())]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            phrases = [" ".join(rng.choices(WORDS, k=40)) for _ in range(64)]
            writer.write_table(
                pa.table(
                    {
                        "id": pa.array(range(start, start + n), pa.int64()),
                        "title": [f"{WORDS[i % len(WORDS)]} {i}" for i in range(start, start + n)],
                        "review": [phrases[(start + i) % 64] for i in range(n)],
                        "stars": pa.array([i % 5 + 1 for i in range(n)], pa.int8()),
                    },
                    schema=schema,
                )
            )


def _floor(path: Path) -> int:
    import orjson
    import pyarrow.parquet as pq

    count = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["id", "title", "review"]):
        for row in batch.to_pylist():
            orjson.dumps(
                {
                    "custom_id": row["id"],
                    "body": {
                        "model": MODEL,
                        "messages": [{"role": "user", "content": row["review"]}],
                    },
                }
            )
            count += 1
    return count


def _baseline(path: Path) -> int:
    import json

    import jinja2
    import pandas as pd

    frame = pd.read_parquet(path, columns=["id", "title", "review"])
    system = TEMPLATE["system"]
    prompt = jinja2.Template(TEMPLATE["prompt"])
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as out:
        for row in frame.to_dict("records"):
            body = {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": prompt.render(**row)},
                ],
                **TEMPLATE["params"],
            }
            line = {"custom_id": str(row["id"]), "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    return len(frame)


def _prepare(path: Path) -> int:
    from batch_pipeline.inputs import InputOptions
    from batch_pipeline.inputs.prepare import prepare_table
    from batch_pipeline.inputs.template import load_template

    staging = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    try:
        plan = prepare_table(path, load_template(TEMPLATE), staging, InputOptions())
        assert plan.rejected_count == 0, plan.rejected_count
        return plan.summary.requests
    finally:
        shutil.rmtree(staging, ignore_errors=True)


WORKLOADS = {"floor": _floor, "baseline": _baseline, "prepare": _prepare}


def measure(workload: str, path: Path) -> dict[str, float]:
    """One workload in a fresh child process: its wall time and peak RSS."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", workload, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(child.stdout)


def _child(workload: str, path: Path) -> None:
    import orjson  # noqa: F401 - imports are not part of the measured work
    import pyarrow.parquet  # noqa: F401

    import batch_pipeline.inputs.prepare  # noqa: F401

    start = time.perf_counter()
    rows = WORKLOADS[workload](path)
    seconds = time.perf_counter() - start
    peak_kib = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss_mib": peak_kib / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size (CI smoke)")
    parser.add_argument("--sizes", type=int, nargs="*", help="row counts (default 1M 10M)")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return
    sizes = args.sizes or ([50_000] if args.quick else [1_000_000, 10_000_000])
    work = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    ratios: dict[tuple[int, str], float] = {}
    rss: dict[tuple[int, str], float] = {}
    try:
        print(f"Table -> shards (render, validate, shard); machine: {machine()}")
        print(
            f"{'rows':>10} {'workload':>8} {'seconds':>8} {'rows/s':>10} {'x floor':>7} "
            f"{'x baseline':>10} {'peak RSS MiB':>12}"
        )
        for size in sizes:
            path = work / f"table-{size}.parquet"
            generate(path, size)
            results = {workload: measure(workload, path) for workload in WORKLOADS}
            for workload, result in results.items():
                assert result["rows"] == size, result
                seconds = result["seconds"]
                ratios[size, workload] = seconds / results["baseline"]["seconds"]
                rss[size, workload] = result["peak_rss_mib"]
                print(
                    f"{size:>10,} {workload:>8} {seconds:>8.2f} {size / seconds:>10,.0f} "
                    f"{seconds / results['floor']['seconds']:>7.2f} "
                    f"{ratios[size, workload]:>10.2f} {result['peak_rss_mib']:>12.1f}"
                )
            path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    large, small = max(sizes), min(sizes)
    stated = "" if large >= 10**7 else "; this run is smaller"
    print(f"\nGoals (stated for 1,000,000 and 10,000,000 rows{stated}):")
    for size in sizes:
        ratio = ratios[size, "prepare"]
        print(
            f"  prepare (rendered, checked, sharded) faster than the unchecked baseline at "
            f"{size:,} rows: {ratio:.2f}x its time  {verdict(ratio < GOAL_VS_BASELINE)}"
        )
    if small < large:
        grown = rss[large, "prepare"] - rss[small, "prepare"]
        allowed = GOAL_SLACK_MIB + GOAL_BYTES_PER_ROW * (large - small) / 2**20
        print(
            f"  prepare memory {small:,} -> {large:,} rows: {rss[small, 'prepare']:.0f} -> "
            f"{rss[large, 'prepare']:.0f} MiB, grew {grown:.0f} MiB <= {allowed:.0f} MiB  "
            f"{verdict(grown <= allowed)}"
        )


if __name__ == "__main__":
    main()
