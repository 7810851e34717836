"""`batch-pipeline validate`: exit codes 0/1/2 and the `FILE:LINE: field: reason` output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from inputs_corpus import jsonl, openai_line

from batch_pipeline.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(["validate", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_valid_file_exits_0_with_a_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.jsonl"
    path.write_bytes(jsonl(openai_line("a"), openai_line("b")))
    code, out, err = _run(capsys, str(path))
    assert code == 0 and err == ""
    assert out == [
        f"{path}: ok: 2 requests, {path.stat().st_size:,} bytes, 1 shards, "
        "models: openai/gpt-4o-mini, ~68 prompt tokens"
    ]


def test_invalid_file_exits_1_one_problem_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl(openai_line("a"), b"[]", openai_line("", method="GET")))
    code, out, _ = _run(capsys, str(path))
    assert code == 1
    assert out[:3] == [
        f"{path}:2: line is a JSON array, not an object",
        f"{path}:3: custom_id: empty",
        f"{path}:3: method: must be \"POST\", got 'GET'",
    ]
    assert out[3].startswith(f"{path}: INVALID, 3 problem(s): 1 requests")
    assert len(out) == 4


def test_several_files_report_each_and_fail_if_any_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(openai_line("a")))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    code, out, _ = _run(capsys, str(good), str(empty))
    assert code == 1
    assert out[0].startswith(f"{good}: ok:")
    assert out[1] == f"{empty}: file is empty (no requests)"


def test_missing_file_is_a_problem_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, str(tmp_path / "nope.jsonl"), str(tmp_path))
    assert code == 1
    assert out == [
        f"{tmp_path / 'nope.jsonl'}: no such file",
        f"{tmp_path}: is a directory, not a file",
    ]


def test_max_problems_limits_output_but_not_the_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"[]\n" * 10)
    code, out, _ = _run(capsys, str(path), "--max-problems", "2")
    assert code == 1
    assert out[2] == f"{path}: ... and 8 more problem(s) not shown (--max-problems)"
    assert "INVALID, 10 problem(s)" in out[3]


def test_default_provider_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bare.jsonl"
    path.write_bytes(jsonl(openai_line("a", model="gpt-4o")))
    assert _run(capsys, str(path))[0] == 1
    assert _run(capsys, str(path), "--default-provider", "openai")[0] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--default-provider", "nosuch", "x.jsonl"], "unknown default provider 'nosuch'"),
        (["--max-problems", "-1", "x.jsonl"], "must be 0 or more"),
        ([], "the following arguments are required: INPUT"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(["validate", *argv])
        raise SystemExit(code)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_console_script_hostile_file_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep name ü.jsonl"
    path.write_bytes(b"[" * 10_000 + b"]" * 10_000 + b"\n\xff\xfe\n")
    done = subprocess.run(
        [sys.executable, "-m", "batch_pipeline.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    # the name is one the pipeline takes (as `deep_name_u`): only the content is reported
    assert lines[0:2] == [
        f"{path}:1: JSON nested deeper than 1024 levels",
        f"{path}:2: not valid UTF-8 (byte 0xff at byte 1)",
    ]
    assert "Traceback" not in done.stdout + done.stderr
