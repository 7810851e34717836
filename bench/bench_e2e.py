"""Benchmark: one input file from drop to Parquet through the whole pipeline (issue 8).

A seeded file of OpenAI chat requests (about 5% of them fail on purpose with 400/429/500) goes
through the driver behind `batch-pipeline run`: the same Dagster assets and
status sensor as production, in the foreground. The emulator runs in this process at its maximum
speed (no validation or finalizing delay, unbounded requests per second), while the pipeline
runs in its own Python process, so its peak RSS is its own and the two do not share a GIL.

Figures: the time from the drop (the start of the run) to the Parquet tables (the end of the
collect step), split into the pipeline's phases from Dagster's step timings (validate + shard,
upload + create, waiting for the batches, collect = download + Parquet + invariant check), and
the emulator's own processing time from its batch records (`GET /_emulator/batches/{id}`: first
created to last completed). Pipeline overhead = drop-to-Parquet minus emulator processing.
Usage:

    python bench/bench_e2e.py             # 100,000 requests
    python bench/bench_e2e.py --quick     # 5,000 requests, a CI smoke run
    python bench/bench_e2e.py --profile 25   # also the pipeline process's top 25 functions
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_common import machine, verdict

MODEL = "openai/gpt-4o-mini"
FAILURES = ("[[fail:400]]", "[[fail:429]]", "[[fail:500]]")
FAILURE_SHARE = 0.05
RSS_SAMPLE_SECONDS = 0.02
FULL_SIZE, QUICK_SIZE = 100_000, 5_000
WORK_PHASES = ("validate + shard", "upload + create", "collect (download + Parquet + check)")
_VOCABULARY = (
    "order invoice refund shipping delivery account password login charge card billing "
    "late broken damaged missing wrong size color replacement cancel subscription plan "
    "upgrade downgrade support agent waited hours days week thanks please help urgent "
    "again still never always great terrible okay fine app website checkout cart coupon"
)
WORDS = _VOCABULARY.split(" ")
CATEGORIES = "billing, login, shipping, refund, bug report, feature request, account deletion"


def generate(path: Path, lines: int, seed: int) -> None:
    """Write `lines` support-ticket classification requests; same seed, same bytes."""
    rng = random.Random(seed)
    system = f"Classify the ticket into one of: {CATEGORIES}. Answer with the category only."
    with open(path, "w", encoding="utf-8") as out:
        for n in range(lines):
            text = " ".join(rng.choices(WORDS, k=rng.randint(20, 80)))
            if rng.random() < FAILURE_SHARE:
                text += " " + rng.choice(FAILURES)
            line = {
                "custom_id": f"ticket-{n:07d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "max_tokens": 64,
                    "temperature": 0,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"Ticket {n}: {text}"},
                    ],
                },
            }
            out.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")


# ------------------------------------------------------------------- the pipeline's process


def run_pipeline(path: Path, base_url: str, data_dir: Path, poll_interval: float) -> dict:
    """Run the file as `batch-pipeline run` does, in this process; its timeline, phases and RSS."""
    import dagster as dg

    from batch_pipeline.integration.driver import PipelineDriver, dagster_instance
    from batch_pipeline.integration.loading import load_pipeline
    from batch_pipeline.ledger.manifest import ManifestStore

    rss_after_imports = _current_rss_mib()
    samples: list[tuple[float, float]] = []
    sampling = threading.Event()

    def sample_rss() -> None:
        while not sampling.wait(RSS_SAMPLE_SECONDS):
            samples.append((time.time(), _current_rss_mib()))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    ticks = 0

    def progress(message: str) -> None:
        nonlocal ticks
        ticks += "batches finished" in message

    dropped = time.time()
    defs, pipeline = load_pipeline()
    with dagster_instance() as instance:
        driver = PipelineDriver(
            defs, pipeline, instance, gateway_url=base_url, data_root=str(data_dir)
        )
        summary = driver.run([path], poll_interval=poll_interval, progress=progress)
    finished = time.time()
    sampling.set()
    sampler.join()
    outcome = summary.files[0]
    if not summary.ok:
        raise RuntimeError(f"{outcome.name}: {outcome.message or 'not every line accounted for'}")
    with dg.DagsterInstance.get() as instance:
        steps = {
            step.step_key: (step.start_time, step.end_time)
            for run in instance.get_runs()
            for step in instance.get_run_step_stats(run.run_id)
        }
    manifest = ManifestStore(data_dir / "batches").load(outcome.name)
    return {
        "dropped": dropped,
        "finished": finished,
        "steps": steps,
        "batch_ids": manifest.batch_ids if manifest else [],
        "results": outcome.results,
        "errors": outcome.errors,
        "ticks": ticks,
        "rss_after_imports_mib": rss_after_imports,
        "rss_samples": samples,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _current_rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _child(args: list[str], profile: int) -> None:
    path, base_url, data_dir, poll_interval = args
    # Imports are not part of the measured time; the run would import these lazily.

    if not profile:
        print(json.dumps(run_pipeline(Path(path), base_url, Path(data_dir), float(poll_interval))))
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(
        run_pipeline, Path(path), base_url, Path(data_dir), float(poll_interval)
    )
    stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime")
    stats.print_stats(profile)
    print(json.dumps(result))


# ----------------------------------------------------------------------------- the parent


def measure(path: Path, base_url: str, work: Path, poll_interval: float, profile: int) -> dict:
    """Run the pipeline in a fresh process with its own Dagster home; return its figures."""
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("BIFROST_API_KEY", None)
    command = [sys.executable, __file__, "--child", str(path), base_url, str(work / "data")]
    command += [str(poll_interval), "--profile", str(profile)]
    child = subprocess.run(command, capture_output=True, text=True, env=env)
    if child.returncode != 0:
        raise RuntimeError(f"pipeline process failed:\n{child.stderr.strip()}")
    if profile:
        print(child.stderr, file=sys.stderr)
    return json.loads(child.stdout)


def emulator_window(base_url: str, batch_ids: list[str]) -> dict:
    """When the emulator first created and last completed the batches (its own records)."""
    from urllib.parse import quote

    import httpx

    records = [
        httpx.get(f"{base_url}/_emulator/batches/{quote(b, safe='')}").raise_for_status().json()
        for b in batch_ids
    ]
    for record in records:
        if record["status"] != "completed":
            raise RuntimeError(f"batch {record['id']} ended {record['status']}")
    return {
        "created": min(r["created_ts"] for r in records),
        "completed": max(r["times"]["completed_at"] for r in records),
        "requests": sum(r["total"] for r in records),
    }


def phases(run: dict) -> list[tuple[str, float, float]]:
    """The drop-to-Parquet timeline cut into back-to-back phases: (name, start, end)."""
    steps = run["steps"]
    validate_start, validate_end = steps["demo__batch_input"]
    create_start, create_end = steps["demo__submitted_batches"]
    collect_start, parquet = steps["demo__collect"]
    return [
        ("start-up (inbox copy, Dagster instance)", run["dropped"], validate_start),
        ("validate + shard", validate_start, validate_end),
        ("Dagster step hand-over", validate_end, create_start),
        ("upload + create", create_start, create_end),
        ("waiting for the batches (sensor ticks)", create_end, collect_start),
        ("collect (download + Parquet + check)", collect_start, parquet),
    ]


def peak_between(samples: list[list[float]], start: float, end: float) -> str:
    """The largest sampled RSS (MiB) between two instants; "-" when no sample fell there."""
    peak = max((rss for at, rss in samples if start <= at <= end), default=None)
    return "-" if peak is None else f"{peak:.0f}"


def report(run: dict, emulator: dict, requests: int, megabytes: float, poll_interval: float):
    """Print the timeline, the split between pipeline and emulator, and the goals."""
    cut = phases(run)
    dropped, parquet = cut[0][1], cut[-1][2]
    total = parquet - dropped
    processing = emulator["completed"] - emulator["created"]
    overhead = total - processing
    lag = cut[-1][1] - emulator["completed"]
    work = sum(end - start for name, start, end in cut if name in WORK_PHASES)
    samples = run["rss_samples"]
    print()
    print(
        f"End to end: {requests:,} requests ({megabytes:.0f} MB, {len(run['batch_ids'])} "
        f"batches, poll interval {poll_interval:g} s); {machine()}"
    )
    header = f"{'phase':<42} {'seconds':>8} {'share':>6} {'peak RSS MiB':>13}"
    print(header)
    print("-" * len(header))
    for name, start, end in [*cut, ("drop to Parquet", dropped, parquet)]:
        print(
            f"{name:<42} {end - start:>8.2f} {(end - start) / total:>6.0%} "
            f"{peak_between(samples, start, end):>13}"
        )
    print("-" * len(header))
    rows = [
        ("emulator processing", processing, "first batch created -> last batch completed"),
        ("pipeline overhead", overhead, "drop to Parquet - emulator processing"),
        ("  last batch done -> collect starts", lag, "poll interval, sensor tick, run launch"),
        ("  pipeline work: validate, upload, collect", work, "grows with the requests"),
    ]
    for name, seconds, note in rows:
        print(f"{name:<42} {seconds:>8.2f} {seconds / total:>6.0%}  ({note})")
    print()
    after = run["finished"] - parquet
    print(
        f"{'after Parquet: summary + outcomes view':<42} {after:>8.2f} {'':>6} "
        f"{peak_between(samples, parquet, run['finished']):>13}"
    )
    print()
    print(
        f"throughput: drop to Parquet {requests / total:,.0f} requests/s, emulator alone "
        f"{requests / processing:,.0f} requests/s, pipeline work alone "
        f"{requests / work:,.0f} requests/s; {run['ticks']} sensor ticks"
    )
    print(
        f"pipeline process RSS: {run['rss_after_imports_mib']:.0f} MiB after imports, "
        f"{run['peak_rss_mib']:.0f} MiB peak (ru_maxrss); rows: {run['results']:,} results + "
        f"{run['errors']:,} errors"
    )
    print()
    print("Goals (issue 8 sets no figure here; its aim: the pipeline must not be the bottleneck):")
    rows_written = run["results"] + run["errors"]
    print(
        f"  every input line accounted for: {rows_written:,} rows, {emulator['requests']:,} "
        f"processed by the emulator, of {requests:,}  "
        f"{verdict(rows_written == emulator['requests'] == requests)}"
    )
    judged = verdict(work < processing) if requests >= FULL_SIZE else "not judged"
    print(
        f"  pipeline work faster than the emulator at full speed: {requests / work:,.0f} vs "
        f"{requests / processing:,.0f} requests/s  {judged}"
    )
    if requests < FULL_SIZE:
        print(f"  (below {FULL_SIZE:,} requests fixed start-up costs dominate; not judged)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5,000 requests (CI smoke)")
    parser.add_argument("--requests", type=int, help="requests in the file (default 100,000)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="as `run` (default 1 s)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the pipeline process's top N functions by own time",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.profile)
        return 0

    from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig

    requests = args.requests or (QUICK_SIZE if args.quick else FULL_SIZE)
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    config = EmulatorConfig(
        port=0,
        state_dir=work / "emulator",
        validation_delay=0.0,
        finalizing_delay=0.0,
        requests_per_second=1e12,
        tick_interval=0.01,
        chunk_size=10_000,
    )
    try:
        path = work / f"e2e_{requests}.jsonl"
        generate(path, requests, args.seed)
        megabytes = path.stat().st_size / 1e6
        with EmbeddedEmulator(config) as emulator:
            print(f"running {requests:,} requests through the pipeline ...", flush=True)
            run = measure(path, emulator.base_url, work, args.poll_interval, args.profile)
            window = emulator_window(emulator.base_url, run["batch_ids"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(run, window, requests, megabytes, args.poll_interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
