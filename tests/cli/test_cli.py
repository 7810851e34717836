"""The command line: every sub-command has --help; retry and cancel work and fail in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import chat_lines, write_input

from batch_pipeline.cli import (
    ARROW_MEMORY_POOL,
    COMMANDS,
    GC_YOUNG_THRESHOLD,
    main,
    use_arrow_memory_pool,
)
from batch_pipeline.gateway import BifrostClient
from batch_pipeline.inputs import InputOptions, prepare_input
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore, ShardRecord
from batch_pipeline.operations.submit import submit_plan


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batch_pipeline.cli", command, "--help"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "usage: batch-pipeline" in done.stdout


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["run", "x.jsonl", "--data-dir", "gs://bucket/x"], "must be a local folder or an s3://"),
        (["retry", "x", "--data-dir", "s3://"], "name a bucket"),
        (["cancel", "x", "--data-dir", "ftp://host/x"], "must be a local folder or an s3://"),
    ],
)
def test_a_data_root_that_cannot_be_used_is_a_usage_error(argv, reason, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err


def test_a_bad_input_workers_setting_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("BATCH_PIPELINE_INPUT_WORKERS", "two")
    (tmp_path / "a.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(tmp_path / "a.jsonl")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "BATCH_PIPELINE_INPUT_WORKERS must be a whole number, got 'two'" in err
    assert "Traceback" not in err


def test_demo_needs_a_local_data_dir(capsys) -> None:
    assert main(["demo", "--data-dir", "s3://bucket/samples"]) == 2
    assert "needs a local --data-dir" in capsys.readouterr().err


def test_retry_of_an_uncollected_file_says_why(tmp_path: Path, capsys) -> None:
    assert main(["retry", "nothing", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not collected yet" in err


def test_cancel_from_the_command_line(emulator_factory, tmp_path: Path, capsys) -> None:
    emulator = emulator_factory(validation_delay=30.0)
    layout = DataLayout.at(tmp_path)
    plan = prepare_input(
        write_input(tmp_path, "c", chat_lines(2)), layout.staging("c"), InputOptions()
    )
    store = ManifestStore(tmp_path / "batches")
    with BifrostClient(emulator.base_url) as client:
        submit_plan(client, store, plan)
    assert main(["cancel", "c", "--data-dir", str(tmp_path), "--gateway", emulator.base_url]) == 0
    assert "cancel requested for 1 batch(es)" in capsys.readouterr().out
    record = next(iter(store.load("c").shards.values()))
    assert record.status in ("cancelling", "cancelled")
    assert (
        main(["cancel", "nope", "--data-dir", str(tmp_path), "--gateway", emulator.base_url]) == 1
    )
    assert "nothing was submitted" in capsys.readouterr().err


def test_cancel_against_an_unreachable_gateway_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)  # a pipeline that gives up on an unreachable gateway in 1 s
    (tmp_path / "quick_defs.py").write_text(
        "import batch_pipeline\n"
        "defs = batch_pipeline.build_pipeline_defs("
        "{'name': 'quick', 'gateway': {'max_retry_seconds': 1}})\n"
    )
    store = ManifestStore(tmp_path / "batches")
    with store.update("c", input_sha256="x") as manifest:
        manifest.shards["s"] = ShardRecord(
            shard_id="s",
            provider="openai",
            model="m",
            endpoint="/v1/chat/completions",
            request_count=1,
            bytes=1,
            state="submitted",
            batch_id="batch_1",
        )
    argv = ["cancel", "c", "-m", "quick_defs", "--data-dir", str(tmp_path)]
    argv += ["--gateway", "http://127.0.0.1:9"]
    assert main(argv) == 69  # EX_UNAVAILABLE: the gateway could not be reached
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "batch-pipeline cancel: gateway unreachable (POST /v1/batches/batch_1/cancel" in err


def test_definitions_that_cannot_load_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_defs.py").write_text("raise RuntimeError('their bug')\n")
    assert main(["run", "x.jsonl", "-m", "broken_defs"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "broken_defs: cannot load definitions: RuntimeError: their bug" in err


def test_an_unknown_pipeline_is_one_line(capsys) -> None:
    assert main(["retry", "x", "--pipeline", "nope"]) == 1
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "batch-pipeline retry: no pipeline 'nope' in these definitions (pipelines: demo)"
    )


@pytest.mark.parametrize(
    ("environ", "pool"),
    [({}, "system"), ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}, "jemalloc")],
)
def test_the_command_chooses_arrows_allocator_unless_one_is_chosen(environ, pool) -> None:
    use_arrow_memory_pool(environ)
    assert environ == {"ARROW_DEFAULT_MEMORY_POOL": pool}


def test_the_console_script_runs_commands_on_the_chosen_allocator_and_gc_threshold() -> None:
    script = (
        "import gc\n"
        "import batch_pipeline.cli as cli\n"
        "def report():\n"
        "    import pyarrow\n"
        "    print(pyarrow.default_memory_pool().backend_name, gc.get_threshold())\n"
        "    return 0\n"
        "cli.main = report\n"
        "cli.console()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"{ARROW_MEMORY_POOL} ({GC_YOUNG_THRESHOLD}, 10, 10)"
