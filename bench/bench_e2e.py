"""Benchmark: one input file from drop to Parquet through the whole pipeline (issues 8 and 18).

A seeded file of OpenAI chat requests (about 5% of them fail on purpose with 400/429/500) goes
through `batch-pipeline run`'s own code path (the loaded definitions, the driver, an ephemeral
Dagster instance, as when DAGSTER_HOME is unset) in a fresh Python process. The emulator runs
in this process at its maximum speed (no validation or finalizing delay, unbounded requests per
second), so the pipeline's process and its peak RSS are its own and the two share no GIL.

Figures: the whole process, from its spawn to its exit, split into phases: interpreter start,
imports, definitions + Dagster instance, then Dagster's step timings (validate + shard, upload +
create, waiting for the batches, collect = download + Parquet + checks + outcomes), then the
summary and exit. The emulator's own processing time comes from its batch records (first
created to last completed). Goals (issue 18): at 5,000 requests, everything but the sleeps
between status polls at most 2 s, printed beside the floor of any Dagster command (a bare process
that imports Dagster, opens an ephemeral instance, runs one trivial asset and exits); at
1,000,000 requests, the whole run within 15% of the emulator's processing time. Usage:

    python bench/bench_e2e.py             # 5,000 and 1,000,000 requests
    python bench/bench_e2e.py --quick     # 5,000 requests, a CI smoke run
    python bench/bench_e2e.py --requests 100000 --profile 25   # one size, top 25 functions
    python bench/bench_e2e.py --requests 200000 --upload-seconds 2   # each upload held 2 s
    python bench/bench_e2e.py --quick --without-pandas   # as a base install (pandas is dev-only)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_common import fast_emulator, hide_pandas, machine, verdict

MODEL = "openai/gpt-4o-mini"
FAILURES = ("[[fail:400]]", "[[fail:429]]", "[[fail:500]]")
FAILURE_SHARE = 0.05
RSS_SAMPLE_SECONDS = 0.02
SMALL, LARGE = 5_000, 1_000_000
GOAL_SMALL_OVERHEAD = 2.0  # seconds of everything but the sleeps between polls, at SMALL
GOAL_LARGE_RATIO = 1.15  # the whole run over the emulator's processing, at LARGE
FLOOR_REPEAT = 3  # bare Dagster processes timed for the floor under the SMALL goal
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
    started = time.time()
    import dagster as dg  # noqa: F401 - what the command imports before it does anything

    from batch_pipeline.cli.driving import open_driver

    imported = time.time()
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

    with open_driver(gateway_url=base_url, data_dir=str(data_dir)) as driver:
        ready = time.time()
        summary = driver.run([path], poll_interval=poll_interval, progress=progress)
        print(summary.render(), file=sys.stderr)
        steps = {
            step.step_key: (step.start_time, step.end_time)
            for run in driver.instance.get_runs()
            for step in driver.instance.get_run_step_stats(run.run_id)
        }
        manifest = driver.data.store().load(summary.files[0].name)
    finished = time.time()
    sampling.set()
    sampler.join()
    outcome = summary.files[0]
    if not summary.ok:
        raise RuntimeError(f"{outcome.name}: {outcome.message or 'not every line accounted for'}")
    return {
        "started": started,
        "imported": imported,
        "ready": ready,
        "finished": finished,
        "waited": summary.waited,
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


def _child(args: list[str], profile: int, without_pandas: bool) -> None:
    if without_pandas:
        hide_pandas()
    # how the command starts (its GC threshold) and ends (no module teardown), both measured
    from batch_pipeline.cli import collect_young_objects_less_often, exit_now

    collect_young_objects_less_often()

    path, base_url, data_dir, poll_interval = args
    if not profile:
        print(json.dumps(run_pipeline(Path(path), base_url, Path(data_dir), float(poll_interval))))
        exit_now(0)
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(
        run_pipeline, Path(path), base_url, Path(data_dir), float(poll_interval)
    )
    stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime")
    stats.print_stats(profile)
    print(json.dumps(result))
    exit_now(0)


def _dagster_floor_child() -> None:
    """The least a command built on Dagster pays: import it, open an ephemeral instance, run one
    trivial asset, and leave without tearing down modules, on the command's GC threshold, as
    `batch-pipeline` does."""
    from batch_pipeline.cli import collect_young_objects_less_often

    collect_young_objects_less_often()
    import dagster as dg

    @dg.asset
    def one() -> int:
        return 1

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    with dg.DagsterInstance.ephemeral(settings={"telemetry": {"enabled": False}}) as instance:
        dg.materialize([one], instance=instance, run_config=quiet)
    sys.stdout.flush()
    os._exit(0)


# ----------------------------------------------------------------------------- the parent


def dagster_floor(repeat: int) -> float:
    """The median spawn-to-exit seconds of `repeat` bare Dagster processes: the part of the
    pipeline's time that any command on Dagster spends on this machine."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    seconds = []
    for _ in range(repeat):
        spawned = time.time()
        subprocess.run([sys.executable, __file__, "--dagster-floor"], env=env, check=True)
        seconds.append(time.time() - spawned)
    return statistics.median(seconds)


def measure(
    path: Path, base_url: str, work: Path, poll_interval: float, profile: int, without_pandas: bool
) -> dict:
    """Run the pipeline in a fresh process, as the command runs (no DAGSTER_HOME: an ephemeral
    instance); its figures, with when the process was spawned and when it had exited."""
    from batch_pipeline.cli import use_arrow_memory_pool

    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIFROST_API_KEY")}
    use_arrow_memory_pool(env)  # as the command chooses it before importing pyarrow
    data = work / f"data-{path.stem}"
    command = [sys.executable, __file__, "--child", str(path), base_url, str(data)]
    command += [str(poll_interval), "--profile", str(profile)]
    command += ["--without-pandas"] if without_pandas else []
    before = _cpu_seconds(resource.RUSAGE_CHILDREN), _cpu_seconds(resource.RUSAGE_SELF)
    spawned = time.time()
    child = subprocess.run(command, capture_output=True, text=True, env=env)
    exited = time.time()
    after = _cpu_seconds(resource.RUSAGE_CHILDREN), _cpu_seconds(resource.RUSAGE_SELF)
    if child.returncode != 0:
        raise RuntimeError(f"pipeline process failed:\n{child.stderr.strip()}")
    if profile:
        print(child.stderr, file=sys.stderr)
    cpu = {"cpu_pipeline": after[0] - before[0], "cpu_emulator": after[1] - before[1]}
    return {**json.loads(child.stdout), "spawned": spawned, "exited": exited, **cpu}


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def hold_uploads(base_url: str, seconds: float) -> None:
    """Make every file upload take `seconds` more: the emulator's `slow` fault, for all of them
    (a gateway passing each file on to its provider)."""
    import httpx

    fault = {"kind": "slow", "routes": ["file_upload"], "count": None, "delay": seconds}
    httpx.post(f"{base_url}/_emulator/faults", json=fault).raise_for_status()


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
    """The spawn-to-exit timeline cut into back-to-back phases: (name, start, end)."""
    steps = run["steps"]
    validate_start, validate_end = steps["demo__batch_input"]
    create_start, create_end = steps["demo__submitted_batches"]
    collect_start, collect_end = steps["demo__collect"]
    return [
        ("interpreter start", run["spawned"], run["started"]),
        ("imports (Dagster, the package)", run["started"], run["imported"]),
        ("definitions + Dagster instance", run["imported"], run["ready"]),
        ("inbox copy, submit run start", run["ready"], validate_start),
        ("validate + shard", validate_start, validate_end),
        ("Dagster step hand-over", validate_end, create_start),
        ("upload + create", create_start, create_end),
        ("waiting for the batches (sensor ticks)", create_end, collect_start),
        ("collect (download, Parquet, checks, outcomes)", collect_start, collect_end),
        ("collect run end, summary, instance closed", collect_end, run["finished"]),
        ("interpreter exit", run["finished"], run["exited"]),
    ]


def peak_between(samples: list[list[float]], start: float, end: float) -> str:
    """The largest sampled RSS (MiB) between two instants; "-" when no sample fell there."""
    peak = max((rss for at, rss in samples if start <= at <= end), default=None)
    return "-" if peak is None else f"{peak:.0f}"


def report(
    run: dict, emulator: dict, requests: int, megabytes: float, poll_interval: float, held: float
) -> dict:
    """Print the timeline and the split between pipeline and emulator; the goal's figures."""
    cut = phases(run)
    total = run["exited"] - run["spawned"]
    processing = emulator["completed"] - emulator["created"]
    pipeline_time = total - run["waited"]
    samples = run["rss_samples"]
    print()
    print(
        f"End to end: {requests:,} requests ({megabytes:.0f} MB, {len(run['batch_ids'])} "
        f"batches, poll interval {poll_interval:g} s"
        f"{f', each upload held {held:g} s' if held else ''}); {machine()}"
    )
    header = f"{'phase':<46} {'seconds':>8} {'share':>6} {'peak RSS MiB':>13}"
    print(header)
    print("-" * len(header))
    for name, start, end in [*cut, ("process spawn to exit", run["spawned"], run["exited"])]:
        print(
            f"{name:<46} {end - start:>8.2f} {(end - start) / total:>6.0%} "
            f"{peak_between(samples, start, end):>13}"
        )
    print("-" * len(header))
    rows = [
        ("emulator processing", processing, "first batch created -> last batch completed"),
        ("asleep between status polls", run["waited"], "the poll interval"),
        ("pipeline time", pipeline_time, "spawn to exit - asleep between polls"),
    ]
    for name, seconds, note in rows:
        print(f"{name:<46} {seconds:>8.2f} {seconds / total:>6.0%}  ({note})")
    print(
        f"pipeline process RSS: {run['rss_after_imports_mib']:.0f} MiB after imports, "
        f"{run['peak_rss_mib']:.0f} MiB peak; rows: {run['results']:,} results + "
        f"{run['errors']:,} errors; {run['ticks']} sensor ticks"
    )
    cpus = os.cpu_count() or 1
    work = run["cpu_pipeline"] + run["cpu_emulator"]
    print(
        f"CPU: the pipeline's processes {run['cpu_pipeline']:.1f} s, the emulator (this process) "
        f"{run['cpu_emulator']:.1f} s; on {cpus} CPUs their work alone takes >= "
        f"{work / cpus:.1f} s of wall ({work / cpus / processing:.2f}x the emulator's processing)"
    )
    rows_written = run["results"] + run["errors"]
    accounted = rows_written == emulator["requests"] == requests
    print(
        f"  every input line accounted for: {rows_written:,} rows, {emulator['requests']:,} "
        f"processed by the emulator, of {requests:,}  {verdict(accounted)}"
    )
    return {"total": total, "processing": processing, "pipeline": pipeline_time}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5,000 requests (CI smoke)")
    parser.add_argument("--requests", type=int, help="one size instead of 5,000 and 1,000,000")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="as `run` (default 1 s)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--upload-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="hold each file upload S s, as a gateway passing it on to its provider does",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the pipeline process's top N functions by own time",
    )
    parser.add_argument(
        "--without-pandas",
        action="store_true",
        help="run the pipeline as if pandas were not installed, as in a base install",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--dagster-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dagster_floor:
        _dagster_floor_child()
    if args.child:
        _child(args.child, args.profile, args.without_pandas)
        return 0

    sizes = [args.requests] if args.requests else [SMALL] if args.quick else [SMALL, LARGE]
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    figures = {}
    try:
        with fast_emulator(work / "emulator") as emulator:
            if args.upload_seconds:
                hold_uploads(emulator.base_url, args.upload_seconds)
            if args.without_pandas:
                print("the pipeline's process runs without pandas, as a base install does")
            for requests in sizes:
                path = work / f"e2e_{requests}.jsonl"
                generate(path, requests, args.seed)
                megabytes = path.stat().st_size / 1e6
                print(f"running {requests:,} requests through the pipeline ...", flush=True)
                run = measure(
                    path,
                    emulator.base_url,
                    work,
                    args.poll_interval,
                    args.profile,
                    args.without_pandas,
                )
                window = emulator_window(emulator.base_url, run["batch_ids"])
                figures[requests] = report(
                    run, window, requests, megabytes, args.poll_interval, args.upload_seconds
                )
                path.unlink()
            floor = dagster_floor(FLOOR_REPEAT) if SMALL in figures else 0.0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nGoals (issue 18):")
    if SMALL in figures:
        spent = figures[SMALL]["pipeline"]
        print(
            f"  {SMALL:,} requests: everything but the sleeps between polls <= "
            f"{GOAL_SMALL_OVERHEAD:g} s: {spent:.2f} s  {verdict(spent <= GOAL_SMALL_OVERHEAD)}"
        )
        print(
            f"    of which the floor, a bare Dagster process (import, ephemeral instance, one "
            f"trivial run, exit; median of {FLOOR_REPEAT}): {floor:.2f} s; the pipeline's own "
            f"{spent - floor:.2f} s, where the goal leaves it {GOAL_SMALL_OVERHEAD - floor:.2f} s"
        )
    if LARGE in figures:
        ratio = figures[LARGE]["total"] / figures[LARGE]["processing"]
        print(
            f"  {LARGE:,} requests: the whole run <= {GOAL_LARGE_RATIO:g}x the emulator's "
            f"processing: {ratio:.2f}x  {verdict(ratio <= GOAL_LARGE_RATIO)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
