"""Benchmark: what a status tick reads from the data root when most input files are collected,
on local disk and on an S3-compatible server (moto on loopback), ours vs reading every manifest.

baseline  every manifest under batches/ (a listing, then every file)
ours      what the status sensor reads: Dagster's event log says which partitions were
          submitted and not collected since (one query per asset), then only their manifests

The manifests hold 10 shards each, as `submitted_batches` writes them; every file has a submit
materialization and all but `--active` a collect one after it (an ephemeral Dagster instance).
The best of `--repeat` reads is kept. moto answers from one Python process, so its per-request
time is far from AWS S3's (tens of ms, where concurrency would help): read the ratio. No goal is
set (issue 9 asks for none); what matters is that a tick's cost follows the files still in
flight, not every file ever processed. Usage:

    python bench/bench_store.py            # 2,000 files, 20 not collected
    python bench/bench_store.py --quick    # 200 files, a CI smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_common import machine

SHARDS_PER_FILE = 10
PIPELINE = "bench"


def write_manifests(root, files: int, active: int) -> None:
    """`files` manifests of SHARDS_PER_FILE submitted shards; all but `active` ended."""
    from batch_pipeline.ledger.manifest import Manifest, ManifestStore, ShardRecord
    from batch_pipeline.ledger.storage import atomic_write

    store = ManifestStore(root / "batches")
    for n in range(files):
        name = f"store-bench-{n:05d}"
        manifest = Manifest(input_file=name, input_sha256="0" * 64)
        for s in range(SHARDS_PER_FILE):
            manifest.shards[f"s{s}"] = ShardRecord(
                shard_id=f"s{s}",
                provider="openai",
                model="gpt-4o-mini",
                endpoint="/v1/chat/completions",
                request_count=1000,
                bytes=1 << 20,
                state="submitted",
                batch_id=f"batch_{n}_{s}",
                status="completed" if n >= active else "in_progress",
                terminal=n >= active,
            )
        with atomic_write(store.path(name)) as out:
            out.write(manifest.model_dump_json(indent=1).encode())


def record_runs(instance, files: int, active: int) -> None:
    """What Dagster records of those files: each submitted, all but `active` collected since."""
    import dagster as dg

    from batch_pipeline.integration.names import PipelineNames

    names = PipelineNames(PIPELINE)
    for n in range(files):
        name = f"store-bench-{n:05d}"
        keys = [names.submitted_batches] + ([names.batch_results] if n >= active else [])
        for key in keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=name))


def best_of(repeat: int, read: Callable[[], list]) -> tuple[float, int]:
    """(best seconds, manifests read) of `repeat` calls."""
    times, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = len(read())
        times.append(time.perf_counter() - started)
    return min(times), count


def measure(root, instance, repeat: int) -> dict[str, tuple[float, int]]:
    from batch_pipeline.integration.names import PipelineNames
    from batch_pipeline.integration.progress import uncollected_submissions
    from batch_pipeline.ledger.manifest import ManifestStore

    store = ManifestStore(root / "batches")
    names = PipelineNames(PIPELINE)

    def ours() -> list:
        return [store.load(n) for n in uncollected_submissions(instance, names)]

    return {
        "baseline": best_of(repeat, lambda: [store.load(n) for n in store.names()]),
        "ours": best_of(repeat, ours),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="manifests (default 2,000)")
    parser.add_argument("--active", type=int, default=20, help="files not collected (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="reads per variant, best kept")
    parser.add_argument("--quick", action="store_true", help="200 files (CI smoke)")
    args = parser.parse_args()
    files = args.files or (200 if args.quick else 2_000)
    repeat = 1 if args.quick else args.repeat
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from object_store import running_s3

    print(f"machine: {machine()}")
    print(f"{files:,} input files, {args.active} not collected, {SHARDS_PER_FILE} shards each\n")
    print(
        f"{'data root':<10} {'variant':<9} {'manifests read':>14} {'seconds':>8} {'vs baseline':>11}"
    )
    print("-" * 56)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder, running_s3() as endpoint:
        import s3fs

        from batch_pipeline.ledger.storage import data_root

        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_ENDPOINT_URL=endpoint,
            AWS_DEFAULT_REGION="us-east-1",
        )
        s3fs.S3FileSystem().call_s3("create_bucket", Bucket="bench-store")
        roots = {
            "local": data_root(Path(folder) / "data"),
            "s3": data_root("s3://bench-store/data"),
        }
        import dagster as dg

        instance = dg.DagsterInstance.ephemeral()
        record_runs(instance, files, args.active)
        for label, root in roots.items():
            write_manifests(root, files, args.active)
            figures = measure(root, instance, repeat)
            base = figures["baseline"][0]
            for variant, (seconds, count) in figures.items():
                ratio = base / seconds
                shown = "-" if variant == "baseline" else f"{ratio:.1f}x"
                print(f"{label:<10} {variant:<9} {count:>14,} {seconds:>8.3f} {shown:>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
