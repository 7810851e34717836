"""results_to_parquet and its CLI: files in, two Parquet tables out, read by real readers."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest
from results_helpers import read_rows

from batch_pipeline.cli import convert as results_cli
from batch_pipeline.results import (
    ERRORS_SCHEMA,
    RESULTS_SCHEMA,
    BatchCollector,
    BatchContext,
    PartitionWriter,
    results_to_parquet,
)

CHAT_OK = {
    "id": "batch_req_1",
    "custom_id": "req-1",
    "response": {
        "status_code": 200,
        "request_id": "req_7f3a",
        "body": {
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {"message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        },
    },
    "error": None,
}
EMBEDDING_OK = {
    "custom_id": "emb-1",
    "response": {
        "status_code": 200,
        "body": {
            "object": "list",
            "data": [{"object": "embedding", "embedding": [0.25, -0.5]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        },
    },
}
BAD_REQUEST = {
    "custom_id": "req-2",
    "response": {
        "status_code": 400,
        "request_id": "req_9b1c",
        "body": {"error": {"message": "Invalid 'max_tokens'", "type": "invalid_request_error"}},
    },
}
EXPIRED = {
    "custom_id": "req-3",
    "response": None,
    "error": {"code": "batch_expired", "message": "late"},
}


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def result_files(tmp_path: Path) -> tuple[Path, Path]:
    output = write_jsonl(
        tmp_path / "output.jsonl",
        [json.dumps(CHAT_OK), json.dumps(EMBEDDING_OK), json.dumps(CHAT_OK), ""],
    )
    errors = write_jsonl(
        tmp_path / "errors.jsonl",
        [
            json.dumps(BAD_REQUEST),
            json.dumps(EXPIRED),
            '{"custom_id": "req-4", "response": {"status',
            "not json",
            '{"response": {"status_code": 200}}',
        ],
    )
    return output, errors


def test_every_line_becomes_one_row(
    tmp_path: Path, result_files: tuple[Path, Path], collected_at: datetime
) -> None:
    output, errors = result_files
    out = tmp_path / "out"
    stats = results_to_parquet(output, errors, out, provider="openai", collected_at=collected_at)
    assert (stats.results_rows, stats.errors_rows) == (3, 5)
    assert stats.errors_by_stage == {"request": 1, "expired": 1, "parse": 3}
    assert (stats.prompt_tokens, stats.total_tokens) == (22, 28)

    results = read_rows(out / "results.parquet")
    assert [row["custom_id"] for row in results] == ["req-1", "emb-1", "req-1"]
    first = results[0]
    assert (first["input_line"], first["batch_id"], first["provider"]) == (None, None, "openai")
    assert (first["model"], first["endpoint"]) == ("gpt-4o-mini", "/v1/chat/completions")
    assert first["collected_at"] == collected_at
    assert results[1]["embedding"] == [0.25, -0.5]

    rows = read_rows(out / "errors.parquet")
    assert [(row["custom_id"], row["stage"]) for row in rows] == [
        ("req-2", "request"),
        ("req-3", "expired"),
        ("req-4", "parse"),
        (None, "parse"),
        (None, "parse"),
    ]
    assert rows[2]["error_message"] == f"{errors}:3: not valid JSON"
    assert rows[3]["raw"] == "not json"
    assert rows[4]["error_message"] == f"{errors}:5: no custom_id"


def test_tables_read_back_with_duckdb_and_polars(
    tmp_path: Path, result_files: tuple[Path, Path]
) -> None:
    out = tmp_path / "out"
    results_to_parquet(*result_files, out)
    results = out / "results.parquet"
    assert duckdb.sql(
        f"select custom_id, output_text, total_tokens, len(embedding) as dims "
        f"from read_parquet('{results}') order by custom_id, output_text"
    ).fetchall() == [
        ("emb-1", None, 4, 2),
        ("req-1", "Hello!", 12, None),
        ("req-1", "Hello!", 12, None),
    ]
    assert duckdb.sql(
        f"select json_extract_string(body, '$.choices[0].message.content') "
        f"from read_parquet('{results}') where custom_id = 'req-1' limit 1"
    ).fetchall() == [("Hello!",)]
    errors = pl.read_parquet(out / "errors.parquet")
    assert errors.schema["retryable"] == pl.Boolean
    assert errors.filter(pl.col("stage") == "request")["status_code"].to_list() == [400]
    assert pl.read_parquet(results).schema["embedding"] == pl.List(pl.Float32)


def test_gzipped_results_endpoint_items(tmp_path: Path, collected_at: datetime) -> None:
    items = [
        {
            "custom_id": "q1",
            "result": {
                "type": "succeeded",
                "message": {
                    "type": "message",
                    "content": [{"type": "text", "text": "Hi"}],
                    "stop_reason": "max_tokens",
                    "usage": {"input_tokens": 1, "output_tokens": 2},
                },
            },
        },
        {"custom_id": "q2", "result": {"type": "expired"}},
    ]
    path = tmp_path / "results.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(item) + "\n" for item in items)
    stats = results_to_parquet(path, None, tmp_path / "out", provider="anthropic")
    assert (stats.results_rows, stats.errors_by_stage) == (1, {"expired": 1})
    row = read_rows(tmp_path / "out" / "results.parquet")[0]
    assert (row["output_text"], row["finish_reason"], row["total_tokens"]) == ("Hi", "length", 3)


def test_a_missing_input_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError):
        results_to_parquet(tmp_path / "nope.jsonl", None, out)
    assert list(out.iterdir()) == []


def test_hive_partitions_are_readable_by_every_reader(
    tmp_path: Path, collected_at: datetime
) -> None:
    data = tmp_path / "data"
    for name, expected in (("a", {"req-1": 1, "req-2": 2}), ("b", {})):
        with PartitionWriter(
            data / "results" / f"input_file={name}" / "part-0.parquet",
            data / "errors" / f"input_file={name}" / "part-0.parquet",
            collected_at=collected_at,
        ) as writer:
            collector = BatchCollector(writer, BatchContext(f"batch_{name}", "openai"), expected)
            collector.add_lines([json.dumps(CHAT_OK)], source=f"{name}.jsonl")
            collector.finish(status="completed")

    dataset = ds.dataset(data / "results", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == 1
    assert table.schema.names == [*RESULTS_SCHEMA.names, "input_file"]
    errors = ds.dataset(data / "errors", format="parquet", partitioning="hive").to_table()
    assert errors.select(["custom_id", "stage", "input_file"]).to_pylist() == [
        {"custom_id": "req-2", "stage": "missing", "input_file": "a"}
    ]
    assert duckdb.sql(
        f"select input_file, count(*) from read_parquet('{data}/errors/*/*.parquet', "
        f"hive_partitioning = true) group by input_file"
    ).fetchall() == [("a", 1)]
    frame = pl.scan_parquet(data / "results" / "**" / "*.parquet", hive_partitioning=True).collect()
    assert frame["input_file"].to_list() == ["a"]
    assert frame.columns[: len(RESULTS_SCHEMA.names)] == RESULTS_SCHEMA.names
    assert (
        pl.scan_parquet(data / "errors" / "**" / "*.parquet", hive_partitioning=True)
        .collect_schema()
        .names()[: len(ERRORS_SCHEMA.names)]
        == ERRORS_SCHEMA.names
    )


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="batch-pipeline results-to-parquet")
    results_cli.add_arguments(parser)
    return results_cli.run(parser.parse_args(argv))


def test_cli_converts_and_prints_a_summary(
    tmp_path: Path, result_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    output, errors = result_files
    out = tmp_path / "out"
    assert run_cli(str(output), "--error-file", str(errors), "--out", str(out)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    assert printed[0].startswith("wrote 3 results and 5 errors (expired 1, parse 3, request 1) to ")
    assert len(read_rows(out / "results.parquet")) == 3


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda tmp, out: [str(tmp / "gone.jsonl"), "--out", str(out)], "gone.jsonl: no such file"),
        (
            lambda tmp, out: [str(out), "--error-file", str(tmp / "gone.jsonl"), "--out", str(tmp)],
            "gone.jsonl: no such file",
        ),
        (lambda tmp, out: [str(out), "--out", str(out)], "exists and is not a directory"),
    ],
    ids=["missing-output", "missing-error-file", "out-is-a-file"],
)
def test_cli_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_args, message: str
) -> None:
    existing = write_jsonl(tmp_path / "output.jsonl", [json.dumps(CHAT_OK)])
    assert run_cli(*make_args(tmp_path, existing)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(message)


def test_cli_write_failure_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = write_jsonl(tmp_path / "output.jsonl", [json.dumps(CHAT_OK)])
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "results.parquet").mkdir()  # a directory where the file must go: rename fails
    assert run_cli(str(output), "--out", str(locked)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"batch-pipeline results-to-parquet: {locked / 'results.parquet'}: Is a directory"
    ]
    assert sorted(path.name for path in locked.iterdir()) == ["results.parquet"]


def test_console_command_end_to_end(tmp_path: Path, result_files: tuple[Path, Path]) -> None:
    output, errors = result_files
    out = tmp_path / "out"
    command = [sys.executable, "-m", "batch_pipeline.cli", "results-to-parquet", str(output)]
    done = subprocess.run(
        [*command, "--error-file", str(errors), "--out", str(out), "--provider", "azure"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote 3 results and 5 errors")
    assert {row["provider"] for row in read_rows(out / "errors.parquet")} == {"azure"}
    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "absent.jsonl"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (missing.returncode, missing.stderr) == (
        2,
        f"{tmp_path / 'absent.jsonl'}: no such file\n",
    )
