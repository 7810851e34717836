"""The benchmark's seeded generator, and a realistic round trip through results_to_parquet."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import duckdb
import pytest

from batch_pipeline.results import results_to_parquet

BENCH_DATA = Path(__file__).resolve().parents[2] / "bench" / "results_data.py"


@pytest.fixture(scope="module")
def generate():
    spec = importlib.util.spec_from_file_location("results_data", BENCH_DATA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generator_is_seeded(tmp_path: Path, generate) -> None:
    generate(tmp_path / "o1.jsonl", tmp_path / "e1.jsonl", 300, seed=3)
    generate(tmp_path / "o2.jsonl", tmp_path / "e2.jsonl", 300, seed=3)
    generate(tmp_path / "o3.jsonl", tmp_path / "e3.jsonl", 300, seed=4)
    assert digest(tmp_path / "o1.jsonl") == digest(tmp_path / "o2.jsonl")
    assert digest(tmp_path / "e1.jsonl") == digest(tmp_path / "e2.jsonl")
    assert digest(tmp_path / "o1.jsonl") != digest(tmp_path / "o3.jsonl")


def test_generated_files_convert_with_every_request_accounted_for(tmp_path: Path, generate) -> None:
    output, errors = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    generate(output, errors, 3000, seed=8)
    lines = [json.loads(line) for path in (output, errors) for line in path.open()]
    out = tmp_path / "out"
    stats = results_to_parquet(output, errors, out, provider="openai")

    ok = [line for line in lines if (line["response"] or {}).get("status_code") == 200]
    assert stats.results_rows == len(ok)
    assert stats.errors_rows == len(lines) - len(ok)
    assert 0.03 < stats.errors_rows / len(lines) < 0.07
    assert stats.prompt_tokens == sum(
        line["response"]["body"]["usage"]["prompt_tokens"] for line in ok
    )
    expired = sum(1 for line in lines if line["response"] is None)
    assert stats.errors_by_stage["expired"] == expired

    results = out / "results.parquet"
    by_endpoint = dict(
        duckdb.sql(
            f"select endpoint, count(*) from read_parquet('{results}') group by endpoint"
        ).fetchall()
    )
    embeddings = sum(1 for line in ok if line["response"]["body"]["object"] == "list")
    assert by_endpoint == {
        "/v1/chat/completions": len(ok) - embeddings,
        "/v1/embeddings": embeddings,
    }
    assert duckdb.sql(
        f"select count(*) from read_parquet('{results}') "
        "where endpoint = '/v1/embeddings' and len(embedding) <> 256"
    ).fetchall() == [(0,)]
    first = next(line for line in ok if line["response"]["body"]["object"] == "chat.completion")
    stored = duckdb.sql(
        f"select output_text, body from read_parquet('{results}') where custom_id = ?",
        params=[first["custom_id"]],
    ).fetchall()
    assert stored[0][0] == first["response"]["body"]["choices"][0]["message"]["content"]
    assert json.loads(stored[0][1]) == first["response"]["body"]
