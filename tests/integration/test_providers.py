"""Every provider Bifrost batches, end to end through `batch-pipeline run` on the emulator: a
150-line input per provider, Azure with blob input included (some requests fail on purpose), every line in exactly one row of
results or errors, the answers' text, finish reason and tokens in the same columns whatever
the provider's result shape."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import httpx
import pytest
from driver_support import driver, run
from pipeline_support import counters
from provider_defs import INSTANCES

from batch_pipeline.cli import main
from batch_pipeline.gateway import BifrostClient
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.cancel import cancel_partition

LINES = 150
FAILING = {7: 500, 42: 400, 99: 429}  # line -> HTTP status the emulator answers with


def write_input(path: Path, model: str, *, anthropic_style: bool = False) -> Path:
    """LINES chat requests for `model`; the lines in FAILING fail on purpose."""
    with open(path, "w", encoding="utf-8") as out:
        for n in range(1, LINES + 1):
            text = f"question {n}: answer briefly" + (
                f" [[fail:{FAILING[n]}]]" if n in FAILING else ""
            )
            body: dict[str, Any] = {
                "model": model,
                "max_tokens": 32,
                "messages": [
                    {"role": "system", "content": "You answer in one line."},
                    {"role": "user", "content": text},
                ],
            }
            line = (
                {"custom_id": f"q{n:03d}", "params": body}
                if anthropic_style
                else {"custom_id": f"q{n:03d}", "method": "POST", "url": "/v1/chat/completions"}
                | {"body": body}
            )
            out.write(json.dumps(line) + "\n")
    return path


CASES = [
    pytest.param("gemini_inline", "gemini/gemini-2.5-flash", False, id="gemini-inline"),
    pytest.param("gemini_file", "gemini/gemini-2.5-flash", False, id="gemini-file"),
    pytest.param(
        "bedrock", "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0", False, id="bedrock-claude"
    ),
    pytest.param(
        "bedrock", "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0", True, id="bedrock-messages"
    ),
    pytest.param("bedrock", "bedrock/meta.llama3-1-8b-instruct-v1:0", False, id="bedrock-converse"),
    pytest.param("vertex", "vertex/gemini-2.5-flash", False, id="vertex"),
]


@pytest.mark.parametrize(("pipeline", "model", "anthropic_style"), CASES)
def test_a_provider_end_to_end(
    emulator, tmp_path: Path, monkeypatch, capsys, pipeline: str, model: str, anthropic_style: bool
) -> None:
    data, _ = run_pipeline(
        emulator, tmp_path, monkeypatch, capsys, pipeline, model, anthropic_style
    )
    # Vertex's prediction errors carry a message but no code (Bifrost passes them on so)
    check_outputs(data, model, dict.fromkeys(FAILING) if pipeline == "vertex" else FAILING)
    assert counters(emulator.base_url)["batches_created"] == 1


@pytest.mark.parametrize("pipeline", ["azure_blob", "azure_blob_tidy"])
def test_azure_with_blob_input_end_to_end(
    emulator, tmp_path: Path, monkeypatch, capsys, caplog, pipeline: str
) -> None:
    """Shards put as blobs through the Azure Blob routes, the batch made from `input_blob`, the
    failed requests read from the error blob (Bifrost's /results leaves them out), and with
    `collect.delete_files_after` every blob deleted; the SAS token reaches no output, log or
    file."""
    token = "sv=2024-08-04&ss=b&srt=co&sp=rwc&se=2030-01-01T00%3A00%3A00Z&sig=T0pS3cr3tS1g%2B%3D"
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", token)
    monkeypatch.setenv("BP_TESTS_AZURE_BLOB_ENDPOINT", f"{emulator.base_url}/azure-blob/bptests")
    monkeypatch.delitem(sys.modules, "provider_defs", raising=False)  # read the endpoint anew
    caplog.set_level(logging.DEBUG)
    data, printed = run_pipeline(
        emulator, tmp_path, monkeypatch, capsys, pipeline, "azure/gpt-4o-mini"
    )
    check_outputs(data, "azure/gpt-4o-mini", FAILING)
    seen = counters(emulator.base_url)
    assert seen["batches_created"] == 1
    assert seen["requests_by_route"]["blob_put"] == 1
    assert seen["requests_by_route"]["blob_get"] == 1
    folder = "https://bptests.blob.core.windows.net/batches/pipeline"
    listed = httpx.get(
        f"{emulator.base_url}/_emulator/objects", params={"prefix": f"{folder}/"}
    ).json()["objects"]
    shards = [url for url in listed if url.startswith(f"{folder}/questions/")]
    if pipeline == "azure_blob_tidy":
        assert listed == [] and seen["requests_by_route"]["blob_delete"] == 3
    else:  # the shard, the output blob and the error blob
        assert len(listed) == 3 and len(shards) == 1 and shards[0].endswith(".jsonl")
    secrets = [token, "T0pS3cr3tS1g"]
    assert not any(s in printed + caplog.text for s in secrets)
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(s.encode() in content for s in secrets), path


def run_pipeline(
    emulator,
    tmp_path: Path,
    monkeypatch,
    capsys,
    pipeline: str,
    model: str,
    anthropic_style: bool = False,
) -> tuple[Path, str]:
    """`batch-pipeline run` of a LINES-line input through `pipeline`; its data folder and what
    it printed."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # where `-m provider_defs` is found
    source = write_input(tmp_path / "questions.jsonl", model, anthropic_style=anthropic_style)
    data = tmp_path / "data"
    argv = ["run", str(source), "-m", "provider_defs", "--pipeline", pipeline]
    argv += ["--gateway", emulator.base_url, "--data-dir", str(data), "--poll-interval", "0.1"]
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    return data, out.out + out.err


def check_outputs(data: Path, model: str, statuses: dict[int, int | None]) -> None:
    """Every line in exactly one row; the failed lines with their statuses and a message; the
    answers' text, tokens and finish reason in the same columns whatever the provider."""
    results = f"read_parquet('{data}/results/input_file=questions/*.parquet')"
    errors = f"read_parquet('{data}/errors/input_file=questions/*.parquet')"
    lines = duckdb.sql(
        f"select count(*), count(distinct input_line) from "
        f"(select input_line from {results} union all select input_line from {errors})"
    ).fetchall()
    assert lines == [(LINES, LINES)]
    failed = duckdb.sql(f"select input_line, status_code, error_message from {errors}").fetchall()
    assert {line: status for line, status, _ in failed} == statuses
    assert all(message for _, _, message in failed)
    answers = duckdb.sql(
        f"select count(*) filter (where output_text is not null and output_text <> ''), "
        f"count(*) filter (where prompt_tokens > 0 and completion_tokens > 0), "
        f"list(distinct finish_reason), list(distinct provider) from {results}"
    ).fetchall()[0]
    assert answers[:2] == (LINES - len(FAILING), LINES - len(FAILING))
    assert set(answers[2]) <= {"stop", "length"} and answers[3] == [model.split("/")[0]]


EXPIRY_CASES = [
    pytest.param("gemini_inline", "gemini/gemini-2.5-flash", id="gemini"),
    pytest.param("bedrock", "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0", id="bedrock"),
    pytest.param("vertex", "vertex/gemini-2.5-flash", id="vertex"),
]


@pytest.mark.parametrize(("pipeline", "model"), EXPIRY_CASES)
def test_an_expired_batch_keeps_what_was_answered(
    emulator_factory, tmp_path: Path, monkeypatch, capsys, pipeline: str, model: str
) -> None:
    """A batch that expires half-done: the answered requests are results, the others
    `expired` errors (retryable), whatever the provider."""
    emulator = emulator_factory(
        requests_per_second=60.0, completion_window_seconds=1.0, chunk_size=1
    )
    data, _ = run_pipeline(emulator, tmp_path, monkeypatch, capsys, pipeline, model)
    results = f"read_parquet('{data}/results/input_file=questions/*.parquet')"
    errors = f"read_parquet('{data}/errors/input_file=questions/*.parquet')"
    answered = duckdb.sql(f"select count(*) from {results}").fetchall()[0][0]
    stages = dict(duckdb.sql(f"select stage, count(*) from {errors} group by 1").fetchall())
    assert 0 < answered < LINES - len(FAILING)
    assert stages["expired"] > 0 and answered + sum(stages.values()) == LINES
    assert set(stages) <= {"expired", "request"}
    assert duckdb.sql(
        f"select bool_and(retryable) from {errors} where stage = 'expired'"
    ).fetchall()[0][0]


@pytest.mark.parametrize(("pipeline", "model"), EXPIRY_CASES)
def test_a_cancelled_batch_keeps_what_was_answered(
    emulator_factory, instance, tmp_path: Path, pipeline: str, model: str
) -> None:
    """Cancel while the batch runs: answered requests are results, the rest `canceled`."""
    emulator = emulator_factory(requests_per_second=30.0, chunk_size=1)
    (tmp_path / "inbox").mkdir()
    write_input(tmp_path / "inbox" / "stopme.jsonl", model)
    store = ManifestStore(tmp_path / "batches")
    cancelled: list[object] = []

    def cancel_once_answering() -> None:
        """Cancel as soon as the emulator has answered some of the batch's requests."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cancelled:
            manifest = store.load("stopme")
            record = next(iter(manifest.shards.values()), None) if manifest else None
            if record is not None and record.batch_id:
                inside = f"{emulator.base_url}/_emulator/batches/{quote(record.batch_id, safe='')}"
                if httpx.get(inside).json()["succeeded"] >= 10:
                    with BifrostClient(emulator.base_url) as client:
                        cancelled.append(cancel_partition(client, store, "stopme"))
            time.sleep(0.05)  # the emulator answers 30 requests a second

    canceller = threading.Thread(target=cancel_once_answering)
    canceller.start()
    drive = driver(instance, emulator.base_url, tmp_path, {"providers": INSTANCES[pipeline]})
    try:
        summary = run(drive, tmp_path, ["stopme"], poll_interval=0.2)
    finally:
        canceller.join()
    assert summary.ok, summary.render()
    assert cancelled
    file = summary.files[0]
    assert file.results + file.errors == LINES
    assert 0 < file.results < LINES - len(FAILING)
    assert file.errors_by_stage.get("canceled", 0) > 0
    assert set(file.errors_by_stage) <= {"canceled", "request"}
