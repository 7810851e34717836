"""Each expected failure through the real `batch-pipeline` command: one line with its cause, the
cause's exit code, no stack trace; Dagster's event log in the file the summary names.

The full disk is a real one: a 4 KiB tmpfs mounted over the data root's results/ inside a user
and mount namespace (`unshare --user --map-root-user --mount`, no privilege needed), so the
kernel itself answers ENOSPC to pyarrow's writes, with no hook in the code under test. The mount
dies with the command; the rerun writes to the real disk, as after freeing room.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from reliability_support import arm, assert_one_batch_per_shard, counters

from batch_pipeline.cli.demo import SAMPLES

CLI = Path(sys.executable).with_name("batch-pipeline")
TIX = SAMPLES / "support_tickets.jsonl"  # 40 requests: its results take more than 4 KiB
NOISE = ("Traceback", "Stack Trace", "Warning", "Telemetry", "dagster.yaml")


def run_command(data_root: Path, gateway: str, source: Path) -> list[str]:
    return [str(CLI), "run", str(source), "--gateway", gateway, "--data-dir", str(data_root)]


def finish(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 180)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def assert_quiet(done: subprocess.CompletedProcess[str]) -> None:
    """No stack trace, warning or Dagster banner on the terminal."""
    for noise in NOISE:
        assert noise not in done.stdout + done.stderr, f"{noise!r} in:\n{done.stdout}{done.stderr}"


def event_log(done: subprocess.CompletedProcess[str]) -> Path:
    match = re.search(r"^Dagster's event log of these runs: (.+)$", done.stdout, re.MULTILINE)
    assert match, done.stdout
    return Path(match.group(1))


def tix(tmp_path: Path) -> Path:
    source = tmp_path / "tix.jsonl"
    shutil.copyfile(TIX, source)
    return source


def in_namespace_with_full_results(data_root: Path, command: list[str]) -> list[str]:
    """`command` in a mount namespace where data_root/results/ is a 4 KiB tmpfs."""
    results = data_root / "results"
    results.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o size=4k tmpfs {shlex.quote(str(results))} && exec " + shlex.join(
        command
    )
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]


def namespaces_available() -> bool:
    probe = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
    probe.append("mount -t tmpfs -o size=4k tmpfs /mnt")
    return shutil.which("unshare") is not None and subprocess.run(probe).returncode == 0


def test_a_full_disk_during_collect_names_itself_and_a_rerun_completes(
    emulator, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not namespaces_available():
        pytest.skip("this kernel allows no user+mount namespace to make a small tmpfs in")
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the runs are kept, to read as the UI does
    source = tix(tmp_path)
    command = run_command(data_root, emulator.base_url, source)

    full = finish(in_namespace_with_full_results(data_root, command))
    cause = "no space left on device while writing results of tix: free room and rerun"
    assert full.returncode == 74, full.stdout + full.stderr
    (row,) = [line for line in full.stdout.splitlines() if line.startswith("tix ")]
    assert row.split()[1] == "1" and row.endswith(cause)  # the batch it made is counted
    assert_quiet(full)
    assert "No space left on device" in event_log(full).read_text()  # the trace, in the log
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = instance.get_runs(dg.RunsFilter(job_name="demo_collect"))[0].run_id
        failures = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        ).records
        (failure,) = [r.event_log_entry.dagster_event.step_failure_data for r in failures]
        assert failure.user_failure_data.description == cause  # what the UI shows
        assert failure.user_failure_data.metadata["cause"].value == "disk_full"
        retried = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert retried == []  # a full disk is not retried blindly

    rerun = finish(command)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "every input line accounted for: yes" in rerun.stdout
    assert_quiet(rerun)
    assert_one_batch_per_shard(emulator.base_url, data_root, ["tix"])


def test_concurrent_runs_of_one_file_make_one_batch_and_say_so_in_one_line(
    emulator, data_root: Path, tmp_path: Path
) -> None:
    source = tix(tmp_path)
    # the first run holds the submit while its create waits; the second arrives meanwhile
    arm(emulator.base_url, kind="slow", count=1, delay=20.0, routes=["batch_create"])
    command = run_command(data_root, emulator.base_url, source)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while counters(emulator.base_url)["files_uploaded"] < 1:
            assert first.poll() is None and time.monotonic() < deadline, "first run never uploaded"
            time.sleep(0.1)
        second = finish(command)
        out, err = first.communicate(timeout=180)
    finally:
        first.kill()
    assert second.returncode == 75, second.stdout + second.stderr
    (row,) = [line for line in second.stdout.splitlines() if line.startswith("tix ")]
    assert row.endswith("another run is submitting tix")
    assert_quiet(second)
    done = subprocess.CompletedProcess(command, first.returncode, out, err)
    assert done.returncode == 0, out + err
    assert_quiet(done)
    assert_one_batch_per_shard(emulator.base_url, data_root, ["tix"])


def test_a_refused_key_is_one_line(emulator_factory, data_root: Path, tmp_path: Path) -> None:
    emulator = emulator_factory(api_keys=("right",))
    env = {**os.environ, "BIFROST_API_KEY": "wrong"}
    done = finish(run_command(data_root, emulator.base_url, tix(tmp_path)), env=env)
    assert done.returncode == 77, done.stdout + done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("tix ")]
    assert re.search(
        r"401 from the gateway \(.+\): check BIFROST_API_KEY / BIFROST_VIRTUAL_KEY$", row
    )
    assert "wrong" not in done.stdout + done.stderr + event_log(done).read_text()
    assert_quiet(done)


def test_an_unreachable_gateway_is_one_line(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "quick_defs.py").write_text(  # an instance giving up on the gateway in 1 s
        "import batch_pipeline\n"
        "defs = batch_pipeline.build_pipeline_defs("
        "{'name': 'quick', 'gateway': {'max_retry_seconds': 1}})\n"
    )
    command = [*run_command(data_root, "http://127.0.0.1:9", tix(tmp_path)), "-m", "quick_defs"]
    done = finish(command, cwd=tmp_path)
    assert done.returncode == 69, done.stdout + done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("tix ")]
    assert "gateway unreachable (" in row and "Connection refused" in row
    assert_quiet(done)
