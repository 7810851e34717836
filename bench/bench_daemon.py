"""Benchmark: files dropped into the inbox to Parquet under the real Dagster daemon (issue 18).

`dagster dev` (webserver, daemon, code server) serves a project with one instance of the
component in its defs.yaml (the end-to-end tests' project), its inbox and status sensors ticking
every second, on an instance configured as deploy/dagster.yaml recommends (its run queue,
concurrency, compute log and sensor settings; SQLite storage instead of PostgreSQL). The emulator runs in
this process at its maximum speed. Measured:

- one small file (20 requests) from its drop to its results Parquet;
- bursts of 10 and then 20 such files dropped at once, each until every file is in Parquet,
  with the largest number of processes and the largest RSS of `dagster dev`'s whole process tree
  meanwhile.

Goals: one file in Parquet within 15 s plus the emulator's own time and the sensor intervals
(two ticks); every burst, whatever its size, with a bounded process tree and memory (at most
2 GiB). The bound on processes: dagster dev's own, the run workers' resource tracker,
`max_concurrent_runs` run workers, and as many again whose runs ended (their queue slot is free)
and that are still exiting, which takes seconds on a loaded host. Usage:

    python bench/bench_daemon.py            # one file, then bursts of 10 and 20
    python bench/bench_daemon.py --burst 40 # one file, then bursts of 20 and 40
    python bench/bench_daemon.py --quick    # one file, then a burst of 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from bench_common import fast_emulator, machine, verdict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the end-to-end tests' project and `dagster dev` runner

from dagster_dev_support import dagster_dev, user_project  # noqa: E402

LINES = 20
SENSOR_SECONDS = 1.0  # both sensors of the project tick every second
GOAL_ONE_FILE = 15.0  # seconds beyond the emulator's time and two sensor intervals
GOAL_TREE_RSS_MIB = 2048
SAMPLE_SECONDS = 0.5


def instance_yaml() -> dict:
    """deploy/dagster.yaml's run settings, with the default SQLite storage."""
    chosen = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    chosen.pop("storage")
    return chosen


def write_file(path: Path, tag: str) -> None:
    """A small chat request file, written beside the inbox and renamed in (one event)."""
    lines = []
    for n in range(LINES):
        body = {
            "model": "openai/gpt-4o-mini",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": f"{tag} request {n}: say hi"}],
        }
        line = {"custom_id": f"{tag}-{n}", "method": "POST", "url": "/v1/chat/completions"}
        lines.append(json.dumps({**line, "body": body}))
    staged = path.parent.parent / f".{path.name}"
    staged.write_text("\n".join(lines) + "\n")
    os.replace(staged, path)


def tree(root: int) -> tuple[int, float]:
    """The number of processes under `root` (itself included) and their RSS in MiB."""
    members = _members(root)
    return len(members), sum(_rss_mib(pid) for pid in members)


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _members(root: int) -> set[int]:
    """`root` and every process below it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    members = {root}
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in members} - members
        members |= found
        grew = bool(found)
    return members


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as line:
            return line.read().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


@contextlib.contextmanager
def sampled(root: int) -> Iterator[dict]:
    """The largest process count and RSS of `root`'s tree while the block runs (sampled every
    SAMPLE_SECONDS), and the commands of the largest tree, in the dict it yields."""
    peak: dict = {"processes": 0, "rss": 0.0, "commands": []}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            count, rss = tree(root)
            if count > peak["processes"]:
                peak["commands"] = sorted(_command(p) for p in _members(root))
            peak["processes"] = max(peak["processes"], count)
            peak["rss"] = max(peak["rss"], rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def wait_for(paths: list[Path], timeout: float, dev) -> float:
    """Seconds until every path exists."""
    started = time.monotonic()
    dev.wait(lambda: all(p.exists() for p in paths), timeout, f"{len(paths)} file(s) in Parquet")
    return time.monotonic() - started


def emulator_seconds(base_url: str) -> float:
    """The emulator's own time over every batch it made: created to completed, summed."""
    import httpx

    listed = httpx.get(f"{base_url}/v1/batches", params={"provider": "openai", "limit": 100})
    total = 0.0
    for batch in listed.json()["data"]:
        record = httpx.get(f"{base_url}/_emulator/batches/{batch['id']}").json()
        total += record["times"]["completed_at"] - record["created_ts"]
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a burst of 5 files")
    parser.add_argument(
        "--burst", type=int, default=20, help="files of the larger burst (the first is half)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    home, data = work / "dagster_home", work / "data"
    home.mkdir()
    (data / "inbox").mkdir(parents=True)
    settings = instance_yaml()
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    runs_at_once = settings["concurrency"]["runs"]["max_concurrent_runs"]
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("BIFROST_API_KEY", None)
    bursts = [5] if args.quick else [max(1, args.burst // 2), args.burst]
    peaks: list[dict] = []
    try:
        with fast_emulator(work / "emulator") as emulator:
            project = user_project(work / "project", emulator.base_url, data)
            with dagster_dev(env, work / "dagster-dev.log", project) as dev:
                dev.wait(dev.location_loaded, 180, "the code location to load")
                idle = tree(dev.proc.pid)
                write_file(data / "inbox" / "single.jsonl", "single")
                single = wait_for(
                    [data / "results" / "input_file=single" / "part-0.parquet"], 300, dev
                )
                gateway_single = emulator_seconds(emulator.base_url)
                for size in bursts:
                    names = [f"burst{len(peaks)}-{n:02d}" for n in range(size)]
                    with sampled(dev.proc.pid) as peak:
                        for name in names:
                            write_file(data / "inbox" / f"{name}.jsonl", name)
                        outputs = [
                            data / "results" / f"input_file={n}" / "part-0.parquet" for n in names
                        ]
                        peak["seconds"] = wait_for(outputs, 900, dev)
                    peaks.append(peak | {"files": size})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"Inbox to Parquet under the Dagster daemon (dagster dev, SQLite); {machine()}")
    print(
        f"instance: deploy/dagster.yaml's run settings (at most {runs_at_once} runs at once, "
        f"queue checked every second); sensors every {SENSOR_SECONDS:g} s; {LINES} requests a file"
    )
    print(f"{'what':<46} {'seconds':>8} {'processes':>10} {'tree MiB':>9}")
    print(f"{'idle':<46} {'':>8} {idle[0]:>10} {idle[1]:>9.0f}")
    print(f"{'one file, drop to Parquet':<46} {single:>8.1f}")
    print(f"{'  of it the emulator (its batch)':<46} {gateway_single:>8.1f}")
    for peak in peaks:
        what = f"{peak['files']} files at once, drop to the last Parquet"
        print(f"{what:<46} {peak['seconds']:>8.1f} {peak['processes']:>10} {peak['rss']:>9.0f}")
    if os.environ.get("BENCH_DAEMON_SHOW"):  # which processes made the largest peak
        print("\n".join(max(peaks, key=lambda p: p["processes"])["commands"]))
    allowed = GOAL_ONE_FILE + gateway_single + 2 * SENSOR_SECONDS
    print("\nGoals (issue 18):")
    print(
        f"  one file in Parquet within {GOAL_ONE_FILE:g} s + the emulator + two sensor "
        f"intervals ({allowed:.1f} s): {single:.1f} s  {verdict(single <= allowed)}"
    )
    bound = idle[0] + 1 + 2 * runs_at_once
    most = max(peak["processes"] for peak in peaks)
    print(
        f"  every burst's process tree at most {bound} processes (idle, the run workers' "
        f"resource tracker, {runs_at_once} run workers and as many whose runs ended and that "
        f"are still exiting): {most}, whatever the burst  {verdict(most <= bound)}"
    )
    largest = max(peak["rss"] for peak in peaks)
    print(
        f"  every burst's process tree at most {GOAL_TREE_RSS_MIB} MiB: {largest:.0f} MiB  "
        f"{verdict(largest <= GOAL_TREE_RSS_MIB)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
