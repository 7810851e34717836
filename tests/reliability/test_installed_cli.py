"""`batch-pipeline` behaves like an installed tool: `demo` and `ui` work from an empty directory
(nothing read from it), print no warning or Dagster banner, and Ctrl-C or SIGTERM stops every
process they started. Driven through the real console script with real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dagster_dev_support import LOCATION_QUERY, free_port

from batch_pipeline.cli.demo import SAMPLES

CLI = Path(sys.executable).with_name("batch-pipeline")
NOISE = ("Traceback", "Warning", "WARNING", "Telemetry", "dagster.yaml found", "Welcome")


def assert_quiet(output: str) -> None:
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in:\n{output}"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the settings a checkout may have exported."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIFROST_BASE_URL")}
    return {**env, **extra}


def start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """The command in its own session, as a shell runs a foreground job (Ctrl-C reaches its
    whole process group, and only it, and is not ignored: a test run started in the background
    by a non-interactive shell inherits SIGINT ignored, which a foreground job never has)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f}s:\n{log.read_text()}")
        time.sleep(0.2)


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (pid -> command line), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = command_line(child)
        todo.extend(parents.get(child, []))
    return {p: c for p, c in found.items() if c}


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def survivors(started: dict[int, str]) -> dict[int, str]:
    """Those of `started` still running (same pid, same command line, not a zombie)."""
    alive = {}
    for pid, cmd in started.items():
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and command_line(pid) == cmd:
            alive[pid] = cmd
    return alive


def stop_and_check(proc: subprocess.Popen, signum: int, started: dict[int, str]) -> int:
    """Send `signum` to the command's process group; its exit code, once nothing it started
    is left."""
    os.killpg(proc.pid, signum)
    code = proc.wait(timeout=60)
    deadline = time.monotonic() + 10  # reparented zombies are reaped by init, not at once
    while survivors(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not survivors(started), survivors(started)
    return code


@pytest.fixture
def empty_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "empty"
    folder.mkdir()
    yield folder


def test_demo_works_from_an_empty_directory_and_prints_no_noise(empty_dir: Path) -> None:
    home = empty_dir.parent / "dagster_home"  # a fresh home with no dagster.yaml: banner land
    done = subprocess.run(
        [str(CLI), "demo"],
        cwd=empty_dir,
        env=clean_env(DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_quiet(done.stdout + done.stderr)
    root = empty_dir / "data"
    assert f"demo folder: {root} (samples in {root / 'inbox'})" in done.stdout
    assert sorted(p.name for p in (root / "inbox").iterdir()) == sorted(
        p.name for p in SAMPLES.iterdir()
    )
    for sample in SAMPLES.glob("*.jsonl"):
        assert (root / "results" / f"input_file={sample.stem}" / "part-0.parquet").is_file()
    log = re.search(r"^Dagster's event log of these runs: (.+)$", done.stdout, re.MULTILINE)
    assert log and Path(log.group(1)).parent == root / "logs"
    assert not (home / "telemetry").exists()  # no instance id was made: telemetry stayed off


def test_sigterm_stops_the_demo_and_its_gateway(empty_dir: Path) -> None:
    log = empty_dir.parent / "demo.log"
    proc = start([str(CLI), "demo"], empty_dir, clean_env(), log)
    try:
        wait_for(
            lambda: "embedded gateway emulator at" in log.read_text(), 120, "gateway", proc, log
        )
        url = re.search(r"emulator at (\S+)", log.read_text()).group(1)
        httpx.get(f"{url}/_emulator/counters", timeout=5).raise_for_status()
        started = descendants(proc.pid)
        assert stop_and_check(proc, signal.SIGTERM, started) == 130
    finally:
        proc.kill()
    assert "batch-pipeline demo: interrupted" in log.read_text()
    with pytest.raises(httpx.ConnectError):  # the embedded gateway went with it
        httpx.get(f"{url}/_emulator/counters", timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ui_works_from_an_empty_directory_and_a_signal_stops_every_child(
    empty_dir: Path, signum: int
) -> None:
    port = free_port()
    log = empty_dir.parent / "ui.log"
    proc = start([str(CLI), "ui", "--port", str(port)], empty_dir, clean_env(), log)

    def loaded() -> bool:
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/graphql", json={"query": LOCATION_QUERY}, timeout=5
            )
        except httpx.HTTPError:
            return False
        entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
        return any(
            e["name"] == "batch_pipeline"
            and e["loadStatus"] == "LOADED"
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    started: dict[int, str] = {}
    try:
        wait_for(loaded, 180, "loaded code location", proc, log)
        started = descendants(proc.pid)
        kinds = " ".join(started.values())
        assert "dagster_webserver" in kinds and "dagster._daemon" in kinds and "grpc" in kinds
        assert stop_and_check(proc, signum, started) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in survivors(started):  # a failed stop must not leave servers behind
            os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert_quiet(output)
    assert f"Dagster UI at http://127.0.0.1:{port}" in output
    logs = re.search(r"^Dagster's logs: (.+)$", output, re.MULTILINE)
    assert logs and Path(logs.group(1)).parent == empty_dir / "data" / "logs"
    assert (empty_dir / ".dagster_home" / "dagster.yaml").is_file()
    assert sorted(p.name for p in empty_dir.iterdir()) == [".dagster_home", "data"]
