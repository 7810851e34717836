"""The whole flow in-process through the Dagster definitions (the driver `batch-pipeline run`
uses), against the emulator, with the output read back by DuckDB, polars and pyarrow."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import httpx
import polars as pl
import pyarrow.dataset as ds
import pytest
from driver_support import driver, run
from pipeline_support import anthropic_lines, chat_lines, counters, write_input

from batch_pipeline.gateway import BifrostClient
from batch_pipeline.integration.driver import dagster_instance
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.cancel import cancel_partition

REPO = Path(__file__).resolve().parents[2]


def _run(emulator, root: Path, names: list[str], **kwargs):
    with dagster_instance() as instance:  # $DAGSTER_HOME's when set, as the command line
        return run(driver(instance, emulator.base_url, root), root, names, **kwargs)


def _by_file(summary) -> dict:
    return {f.name: f for f in summary.files}


def test_samples_end_to_end(emulator, tmp_path: Path) -> None:
    shutil.copytree(REPO / "batch_pipeline" / "samples", tmp_path / "inbox")
    summary = _run(emulator, tmp_path, ["*"])
    assert summary.ok, summary.render()
    files = _by_file(summary)
    # what the [[fail:NNN]] markers in the samples imply
    expected = {
        "support_tickets": (37, {"request": 3}),
        "product_embeddings": (30, {}),
        "eval_responses": (19, {"request": 1}),
        "claude_extraction": (23, {"request": 2}),
        # the tables: a null the template needs (row 7), an answer that is not JSON (row 21)
        "product_reviews": (38, {"input": 1, "parse": 1}),
        "catalog_texts": (25, {}),
    }
    assert {n: (f.results, f.errors_by_stage) for n, f in files.items()} == expected

    results = f"{tmp_path}/results/*/*.parquet"
    errors = f"{tmp_path}/errors/*/*.parquet"
    # the tables' partitions add their key and answer columns: read by name
    read = "hive_partitioning=true, union_by_name=true"
    per_file = duckdb.sql(
        f"select input_file, count(*) from read_parquet('{results}', {read}) group by 1 order by 1"
    ).fetchall()
    assert per_file == [
        ("catalog_texts", 25),
        ("claude_extraction", 23),
        ("eval_responses", 19),
        ("product_embeddings", 30),
        ("product_reviews", 38),
        ("support_tickets", 37),
    ]
    # every input line (or row) exactly once across both tables
    lines = duckdb.sql(
        f"""select input_file, count(*), count(distinct input_line), min(input_line), max(input_line) from (
              select input_file, input_line from read_parquet('{results}', {read})
              union all
              select input_file, input_line from read_parquet('{errors}', {read}))
            group by 1 order by 1"""
    ).fetchall()
    assert lines == [
        ("catalog_texts", 25, 25, 1, 25),
        ("claude_extraction", 25, 25, 1, 25),
        ("eval_responses", 20, 20, 1, 20),
        ("product_embeddings", 30, 30, 1, 30),
        ("product_reviews", 40, 40, 1, 40),
        ("support_tickets", 40, 40, 1, 40),
    ]
    # the review labels are typed columns beside the source's key and passthrough columns
    labels = pl.read_parquet(f"{tmp_path}/results/input_file=product_reviews/*.parquet")
    assert {c: str(labels.schema[c]) for c in ("review_id", "sentiment", "confidence")} == {
        "review_id": "Int64",
        "sentiment": "String",
        "confidence": "Float64",
    }
    assert labels["sentiment"].is_in(["positive", "negative", "mixed"]).all()
    frame = pl.read_parquet(f"{tmp_path}/results/input_file=support_tickets/*.parquet")
    assert frame.filter(pl.col("custom_id") == "ticket-012")["finish_reason"].to_list() == [
        "length"
    ]
    assert frame["output_text"].null_count() == 0 and frame["body"].null_count() == 0
    emb = pl.read_parquet(f"{tmp_path}/results/input_file=product_embeddings/*.parquet")
    assert emb["embedding"].list.len().unique().to_list() == [64]
    err = pl.read_parquet(f"{tmp_path}/errors/input_file=support_tickets/*.parquet").sort(
        "input_line"
    )
    assert err["custom_id"].to_list() == ["ticket-007", "ticket-023", "ticket-031"]
    assert err["status_code"].to_list() == [400, 400, 500]
    assert err["retryable"].to_list() == [False, False, True]
    dataset = ds.dataset(tmp_path / "results", format="parquet", partitioning="hive")
    assert dataset.count_rows() == 172 and "input_file" in dataset.schema.names
    assert len(ManifestStore(tmp_path / "batches").names()) == 6

    before = counters(emulator.base_url)["batches_created"]
    assert before == 6
    again = _run(emulator, tmp_path, ["*"])  # a second run reuses every batch
    assert again.ok and counters(emulator.base_url)["batches_created"] == before


def test_run_twice_on_a_persistent_instance(emulator, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    write_input(tmp_path, "twice", chat_lines(4, fail={2: 400}))
    first = _run(emulator, tmp_path, ["twice"])
    # what a collect killed mid-write leaves: hidden temps no reader sees, swept by the next one
    leftovers = [
        tmp_path / "results" / "input_file=twice" / ".part-0.parquet.dead.tmp",
        tmp_path / "staging" / "twice" / "downloads" / ".output-x.jsonl.dead.part",
    ]
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"half")
    second = _run(emulator, tmp_path, ["twice"])  # already collected: collected again, not stuck
    assert not any(p.exists() for p in leftovers)
    assert first.ok and second.ok
    assert [(f.results, f.errors) for f in second.files] == [(3, 1)]
    assert counters(emulator.base_url)["batches_created"] == 1


def test_mixed_openai_and_anthropic_run(emulator, tmp_path: Path) -> None:
    lines = chat_lines(12, fail={3: 500})
    lines[5]["body"]["model"] = "openai/gpt-4.1-mini"  # a second model: its own shard
    write_input(tmp_path, "two_models", lines)
    write_input(tmp_path, "claude", anthropic_lines(5, fail={2: 400}))
    summary = _run(emulator, tmp_path, ["two_models", "claude"])
    assert summary.ok, summary.render()
    files = _by_file(summary)
    assert (
        files["two_models"].batches,
        files["two_models"].results,
        files["two_models"].errors,
    ) == (2, 11, 1)
    assert (files["claude"].batches, files["claude"].results, files["claude"].errors) == (1, 4, 1)
    models = duckdb.sql(
        f"select provider, model, endpoint, count(*) from read_parquet('{tmp_path}/results/*/*.parquet') "
        "group by all order by all"
    ).fetchall()
    assert models == [
        ("anthropic", "claude-3-5-haiku-latest", "/v1/messages", 4),
        ("openai", "gpt-4.1-mini", "/v1/chat/completions", 1),
        ("openai", "gpt-4o-mini", "/v1/chat/completions", 10),
    ]


def test_expired_batch_keeps_partial_results(emulator_factory, tmp_path: Path) -> None:
    emulator = emulator_factory(
        requests_per_second=4.0, completion_window_seconds=1.5, chunk_size=1
    )
    write_input(tmp_path, "slow", chat_lines(30))
    summary = _run(emulator, tmp_path, ["slow"])
    assert summary.ok, summary.render()
    file = _by_file(summary)["slow"]
    assert 0 < file.results < 30
    assert file.errors_by_stage == {"expired": 30 - file.results}
    expired = pl.read_parquet(f"{tmp_path}/errors/input_file=slow/*.parquet")
    assert expired["retryable"].all()


def test_cancelled_batch_keeps_what_finished(emulator_factory, tmp_path: Path) -> None:
    emulator = emulator_factory(requests_per_second=10.0, chunk_size=1)
    write_input(tmp_path, "cancelme", chat_lines(40))
    layout = DataLayout.at(tmp_path)
    store = ManifestStore(layout.root / "batches")

    cancelled = []

    def cancel_when_running(_: str) -> None:
        manifest = store.load("cancelme")
        if cancelled or manifest is None:
            return
        record = next(iter(manifest.shards.values()))
        if record.batch_id and not record.terminal:
            with BifrostClient(emulator.base_url) as client:
                cancelled.append(cancel_partition(client, store, "cancelme"))

    summary = _run(
        emulator, tmp_path, ["cancelme"], poll_interval=0.3, progress=cancel_when_running
    )
    assert summary.ok, summary.render()
    file = _by_file(summary)["cancelme"]
    assert file.results + file.errors == 40 and file.errors_by_stage.get("canceled", 0) > 0
    assert set(file.errors_by_stage) == {"canceled"}


def test_failed_batch_turns_every_request_into_batch_errors(
    emulator_factory, tmp_path: Path
) -> None:
    emulator = emulator_factory(max_requests_per_batch=5)  # OpenAI validation refuses the file
    write_input(tmp_path, "toolong", chat_lines(8))
    summary = _run(emulator, tmp_path, ["toolong"])
    assert summary.ok, summary.render()
    errors = pl.read_parquet(f"{tmp_path}/errors/input_file=toolong/*.parquet")
    assert errors.height == 8 and errors["stage"].unique().to_list() == ["batch"]
    assert errors["batch_id"].null_count() == 0 and not errors["retryable"].any()
    assert errors["error_message"].str.len_chars().min() > 0


def test_invalid_file_is_not_submitted_and_says_why(emulator, tmp_path: Path) -> None:
    write_input(tmp_path, "bad", [*chat_lines(2), "{not json", chat_lines(1)[0]])
    summary = _run(emulator, tmp_path, ["bad"])
    assert not summary.ok
    message = _by_file(summary)["bad"].message
    assert "bad.jsonl:3" in message and "\n" not in message
    assert counters(emulator.base_url)["batches_created"] == 0
    assert httpx.get(f"{emulator.base_url}/_emulator/counters").json()["files_uploaded"] == 0


def test_skip_policy_turns_bad_lines_into_input_errors(emulator, tmp_path: Path) -> None:
    write_input(tmp_path, "partly", [*chat_lines(2), "{not json", {"custom_id": "x"}])
    summary = _run(emulator, tmp_path, ["partly"], batch_input={"on_invalid": "skip"})
    assert summary.ok, summary.render()
    errors = pl.read_parquet(f"{tmp_path}/errors/input_file=partly/*.parquet").sort("input_line")
    assert errors["stage"].to_list() == ["input", "input"]
    assert errors["input_line"].to_list() == [3, 4]
    assert errors["raw"].to_list()[0] == "{not json"


def test_skip_policy_with_no_valid_line_still_accounts_for_every_line(
    emulator, tmp_path: Path
) -> None:
    write_input(tmp_path, "allbad", ["{not json", {"custom_id": "x"}, "[]"])
    summary = _run(emulator, tmp_path, ["allbad"], batch_input={"on_invalid": "skip"})
    assert summary.ok, summary.render()
    errors = pl.read_parquet(f"{tmp_path}/errors/input_file=allbad/*.parquet")
    assert sorted(errors["input_line"].to_list()) == [1, 2, 3]
    assert pl.read_parquet(f"{tmp_path}/results/input_file=allbad/*.parquet").height == 0
    assert counters(emulator.base_url)["batches_created"] == 0


@pytest.mark.parametrize("provider_lines", [chat_lines, anthropic_lines])
def test_gateway_key_is_sent_and_never_stored(
    emulator_factory, tmp_path: Path, monkeypatch, provider_lines
) -> None:
    key = "sk-bf-DISTINCTIVE-test-key-7f3a9"
    emulator = emulator_factory(api_keys=(key,))
    monkeypatch.setenv("BIFROST_API_KEY", key)
    write_input(tmp_path, "keyed", provider_lines(3))
    summary = _run(emulator, tmp_path, ["keyed"])
    assert summary.ok, summary.render()
    for path in tmp_path.rglob("*"):
        if path.is_file() and ".emulator" not in path.parts and "emulator-0" not in path.parts:
            assert key.encode() not in path.read_bytes(), path
