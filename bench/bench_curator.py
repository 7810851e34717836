"""Benchmark: `batch-pipeline run` and bespokelabs-curator side by side (issue 18).

Both send the same N chat prompts ("request i: say something short", gpt-4o-mini) in OpenAI
batch mode to the same emulator at its maximum speed, poll every second, and wait for every
answer; runs alternate between the two, each on a fresh emulator and data folder. Curator
(batch mode, `bespokelabs-curator==0.1.31`) is installed from the package index into its own
venv under bench/out/ the first time and runs offline (see bench/curator_client.py). Reported
per run, of the client process alone: wall time, CPU (user + sys), peak RSS, and the HTTP calls
the emulator counted. Goals: ours/curator wall at most 0.35 at 5,000 prompts and 0.25 at
100,000, with less memory. Usage:

    python bench/bench_curator.py             # 5,000 and 100,000 prompts, 2 runs each
    python bench/bench_curator.py --quick     # 1,000 prompts, 1 run: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import fast_emulator, machine, verdict

BENCH_DIR = Path(__file__).resolve().parent
CURATOR = "bespokelabs-curator==0.1.31"
CURATOR_VENV = BENCH_DIR / "out" / "curator-venv"
GOALS = {5_000: 0.35, 100_000: 0.25}  # ours/curator wall at most this
POLL_SECONDS = 1


def curator_python() -> Path | None:
    """Curator's interpreter, installing it into its own venv the first time; None (and why,
    printed) when it cannot be installed here."""
    python = CURATOR_VENV / "bin" / "python"
    if python.exists():
        return python
    print(f"installing {CURATOR} into {CURATOR_VENV} (once) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(CURATOR_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", CURATOR],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(CURATOR_VENV, ignore_errors=True)
        reason = (exc.stderr or "").strip().splitlines()[-1:] or [str(exc)]
        print(f"cannot install {CURATOR}: {reason[0]}")
        return None
    return python


def measured(command: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """Run a command to its end; its wall time, CPU, peak RSS and its last line of output."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    out = child.stdout.read().decode() if child.stdout else ""
    err = child.stderr.read().decode() if child.stderr else ""
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{command[0]} ... exited {child.returncode}:\n{err[-2000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
        "last_line": (out.strip().splitlines() or [""])[-1],
    }


def one_run(tool: str, n: int, inputs: dict[str, Path], python: Path, work: Path) -> dict:
    """One run of `tool` on a fresh emulator; its figures and the emulator's HTTP call count."""
    import httpx

    folder = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=work))
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIFROST_API_KEY")}
    with fast_emulator(folder / "emulator") as emulator:
        if tool == "ours":
            command = [sys.executable, "-m", "batch_pipeline.cli", "run", str(inputs["ours"])]
            command += ["--gateway", emulator.base_url, "--data-dir", str(folder / "data")]
            command += ["--poll-interval", str(POLL_SECONDS)]
        else:
            command = [str(python), str(BENCH_DIR / "curator_client.py")]
            command += ["--base-url", emulator.base_url, "--prompts", str(inputs["curator"])]
            command += ["--poll", str(POLL_SECONDS), "--work", str(folder / "curator")]
        figures = measured(command, env)
        counters = httpx.get(f"{emulator.base_url}/_emulator/counters").json()
    figures["http_calls"] = sum(counters["requests_by_route"].values())
    figures["answers"] = answers(tool, figures, folder)
    shutil.rmtree(folder, ignore_errors=True)
    if figures["answers"] != n:
        raise RuntimeError(f"{tool}: {figures['answers']} answers of {n}")
    return figures


def answers(tool: str, figures: dict, folder: Path) -> int:
    """How many prompts got an answer: rows in our results, or curator's own count."""
    if tool == "curator":
        return int(json.loads(str(figures["last_line"]))["responses"])
    import pyarrow.dataset as ds

    return ds.dataset(folder / "data" / "results", format="parquet").count_rows()


def write_inputs(n: int, work: Path) -> dict[str, Path]:
    """The same prompts as our JSONL input and as curator's prompt list."""
    prompts = [f"request {i}: say something short" for i in range(n)]
    ours, theirs = work / f"prompts_{n}.jsonl", work / f"prompts_{n}.json"
    with open(ours, "w", encoding="utf-8") as out:
        for i, text in enumerate(prompts):
            body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
            line = {"custom_id": str(i), "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}, separators=(",", ":")) + "\n")
    theirs.write_text(json.dumps(prompts))
    return {"ours": ours, "curator": theirs}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 prompts, one run each")
    parser.add_argument("--sizes", type=int, nargs="*", help="prompt counts (default 5k 100k)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each tool per size")
    args = parser.parse_args()
    sizes = args.sizes or ([1_000] if args.quick else list(GOALS))
    repeat = 1 if args.quick else args.repeat
    python = curator_python()
    if python is None:
        print("side-by-side skipped: curator is not installed (goals not judged)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-curator-"))
    print(f"batch-pipeline run vs {CURATOR}, batch mode, poll {POLL_SECONDS} s; {machine()}")
    header = (
        f"{'prompts':>8} {'tool':>8} {'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>12} "
        f"{'HTTP calls':>10}  (median of {repeat})"
    )
    print(header)
    medians: dict[tuple[int, str], dict[str, float]] = {}
    try:
        for n in sizes:
            inputs = write_inputs(n, work)
            runs: dict[str, list[dict]] = {"ours": [], "curator": []}
            for r in range(repeat):  # alternate, and alternate who goes first
                order = ("ours", "curator") if r % 2 == 0 else ("curator", "ours")
                for tool in order:
                    runs[tool].append(one_run(tool, n, inputs, python, work))
            for tool in ("ours", "curator"):
                figures = {
                    key: statistics.median(float(run[key]) for run in runs[tool])
                    for key in ("wall", "cpu", "rss_mib", "http_calls")
                }
                medians[n, tool] = figures
                print(
                    f"{n:>8,} {tool:>8} {figures['wall']:>7.2f} {figures['cpu']:>6.2f} "
                    f"{figures['rss_mib']:>12.0f} {figures['http_calls']:>10.0f}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nGoals (issue 18):")
    for n in sizes:
        ours, theirs = medians[n, "ours"], medians[n, "curator"]
        ratio = ours["wall"] / theirs["wall"]
        goal = GOALS.get(n)
        judged = f"(goal <= {goal})  {verdict(ratio <= goal)}" if goal else "(not judged)"
        print(f"  {n:,} prompts: ours/curator wall {ratio:.2f} {judged}")
        less = ours["rss_mib"] < theirs["rss_mib"]
        print(
            f"  {n:,} prompts: less memory, {ours['rss_mib']:.0f} vs {theirs['rss_mib']:.0f} "
            f"MiB  {verdict(less) if goal else '(not judged)'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
