"""Tables in, tables out, through the definitions and the emulator: a hostile table and a
template become results with the source's keys and typed answer columns, every row accounted
for once, read back with DuckDB, polars and pyarrow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from driver_support import driver
from pipeline_support import counters

from batch_pipeline.cli import main
from batch_pipeline.integration.driver import dagster_instance

LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "score": {"type": "integer"},
        "confidence": {"type": "number"},
        "is_spam": {"type": "boolean"},
        "topics": {"type": "array", "items": {"type": "string"}},
        "detail": {
            "type": "object",
            "properties": {"lang": {"type": "string"}, "words": {"type": "integer"}},
            "required": ["lang", "words"],
        },
    },
    "required": ["sentiment", "score", "is_spam"],
}
# The Arrow type each property becomes (nullable where not required: all columns are nullable)
LABEL_TYPES = {
    "sentiment": pa.string(),
    "score": pa.int64(),
    "confidence": pa.float64(),
    "is_spam": pa.bool_(),
    "topics": pa.list_(pa.string()),
    "detail": pa.struct([("lang", pa.string()), ("words", pa.int64())]),
}
TOO_LONG = 11 * 1024 * 1024  # over every provider's per-request limit (10 MB)


def template(**changes: Any) -> dict[str, Any]:
    """A structured classification template over `id`, `title`, `body` (and `price` kept)."""
    return {
        "model": "openai/gpt-4o-mini",
        "key": "id",
        "system": "Label the review.",
        "prompt": "Title: {{ title }}\n{{ body }}",
        "response_format": {"name": "label", "schema": LABEL_SCHEMA},
        "params": {"temperature": 0},
        "passthrough": ["price"],
        **changes,
    }


def write_template(path: Path, **changes: Any) -> Path:
    path.write_text(yaml.safe_dump(template(**changes)))
    return path


def hostile_rows() -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Rows that test every way a row can go, and the error stage each bad row must end in
    (by row number)."""
    rows = [
        {"id": n, "title": f"Review {n}", "body": f"Works fine, day {n}.", "price": n * 1.5}
        for n in range(1, 31)
    ]
    rows[2]["title"] = None  # row 3: a null the template needs
    rows[4]["body"] = "Ünïcødé ✓ 日本語のレビュー 🚀 — ça marche"  # row 5: unicode
    rows[6]["body"] = "{{ 7 * 7 }} {% for x in y %}{{ x }}{% endfor %} {# no #}"  # row 7
    rows[8]["body"] = "long " * 40_000  # row 9: long, within limits
    rows[10]["body"] = "x" * TOO_LONG  # row 11: over the per-request limit
    rows[12]["id"] = rows[11]["id"]  # row 13: the key of row 12 again
    rows[14]["body"] = "[[answer:invalid]]"  # row 15: the model's answer is not JSON
    rows[16]["body"] = "[[answer:schema]]"  # row 17: JSON that breaks the schema
    rows[18]["body"] = "[[answer:refusal]]"  # row 19: the model refuses
    rows[20]["price"] = None  # row 21: a null in a passthrough column is kept as null
    bad = {3: "input", 11: "input", 13: "input", 15: "parse", 17: "parse", 19: "parse"}
    return rows, bad


def write_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    schema = pa.schema(
        [("id", pa.int64()), ("title", pa.string()), ("body", pa.string()), ("price", pa.float64())]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=7)
    return path


def quiet(_: str) -> None:
    """A run's progress lines, unprinted."""


def _read(root: Path, kind: str, name: str) -> str:
    return f"read_parquet('{root}/{kind}/input_file={name}/*.parquet', hive_partitioning=false)"


def test_hostile_table_every_row_once_with_typed_answers(emulator, tmp_path: Path) -> None:
    rows, bad = hostile_rows()
    source = write_table(tmp_path / "reviews.parquet", rows)
    write_template(tmp_path / "t.yaml")
    with dagster_instance() as instance:
        summary = driver(instance, emulator.base_url, tmp_path).run(
            [source], template=tmp_path / "t.yaml", poll_interval=0.1, progress=quiet, timeout=60
        )
    assert summary.ok, summary.render()
    (outcome,) = summary.files
    assert (outcome.results, outcome.errors_by_stage) == (24, {"input": 3, "parse": 3})

    results, errors = _read(tmp_path, "results", "reviews"), _read(tmp_path, "errors", "reviews")
    # every row in exactly one of results and errors, by its row number
    once = duckdb.sql(
        f"""select count(*), count(distinct input_line), min(input_line), max(input_line) from (
              select input_line from {results} union all select input_line from {errors})"""
    ).fetchall()[0]
    assert once == (30, 30, 1, 30)
    stages = dict(duckdb.sql(f"select input_line, stage from {errors}").fetchall())
    assert stages == bad
    # the bad rows carry their key (with its source type) and a one-line reason
    reasons = duckdb.sql(
        f"select input_line, id, error_message from {errors} order by input_line"
    ).fetchall()
    assert [(line, key) for line, key, _ in reasons] == [
        (3, 3), (11, 11), (13, 12), (15, 15), (17, 17), (19, 19)
    ]  # fmt: skip
    messages = {line: message for line, _, message in reasons}
    assert "'title' is null" in messages[3]
    assert "over the largest per-request limit" in messages[11]
    assert "the same key as row 12" in messages[13]
    assert messages[15].startswith("not JSON")
    assert messages[17].startswith("schema violation")
    assert messages[19].startswith("refusal")
    assert all("\n" not in m for m in messages.values())
    raw = dict(duckdb.sql(f"select input_line, raw from {errors} where stage = 'parse'").fetchall())
    assert raw[15].startswith("Sure! Here is the answer")  # the model's text, as it came

    # the results: the source's key and passthrough types, one typed column per property
    frame = pl.read_parquet(f"{tmp_path}/results/input_file=reviews/*.parquet")
    table = pq.read_table(tmp_path / "results" / "input_file=reviews" / "part-0.parquet")
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("price").type == pa.float64()
    for name, kind in LABEL_TYPES.items():
        assert table.schema.field(name).type == kind, name
    assert frame["sentiment"].is_in(["positive", "negative", "mixed"]).all()
    assert frame["score"].null_count() == 0 and frame["is_spam"].null_count() == 0
    assert frame.filter(pl.col("id") == 21)["price"].to_list() == [None]
    answers = [orjson.loads(text) for text in frame["output_text"]]
    assert [a["score"] for a in answers] == frame["score"].to_list()
    # every result has its cost at batch prices; cached and reasoning tokens are columns
    assert frame["cost_usd"].null_count() == 0 and (frame["cost_usd"] > 0).all()
    assert {"cached_tokens", "reasoning_tokens"} <= set(frame.columns)

    # source JOIN results USING (key) is 1:1 but for the key the source itself holds twice
    joined = duckdb.sql(
        f"select id, count(*) from read_parquet('{source}') s join {results} r using (id) "
        "group by id having count(*) <> 1"
    ).fetchall()
    assert joined == [(12, 2)]
    # values that look like templates were sent as text, not evaluated
    staged = b"".join(p.read_bytes() for p in (tmp_path / "staging" / "reviews").rglob("*.jsonl"))
    assert b"{{ 7 * 7 }} {% for x in y %}" in staged and "日本語".encode() in staged


def test_table_run_twice_pays_once_and_template_change_is_new_content(
    emulator, tmp_path: Path
) -> None:
    rows = [{"id": n, "title": "t", "body": f"b{n}", "price": 1.0} for n in range(1, 6)]
    write_table(tmp_path / "inbox_src.parquet", rows)
    spec = write_template(tmp_path / "t.yaml")
    with dagster_instance() as instance:
        drive = driver(instance, emulator.base_url, tmp_path)
        first = drive.run(
            [tmp_path / "inbox_src.parquet"], template=spec, poll_interval=0.1, progress=quiet
        )
        again = drive.run(
            [tmp_path / "inbox_src.parquet"], template=spec, poll_interval=0.1, progress=quiet
        )
        assert first.ok and again.ok
        assert counters(emulator.base_url)["batches_created"] == 1
        # another template for the same table under the same name: refused, nothing paid
        changed = write_template(tmp_path / "t2.yaml", prompt="Other: {{ title }}")
        refused = drive.run(
            [tmp_path / "inbox_src.parquet"], template=changed, poll_interval=0.1, progress=quiet
        )
    assert not refused.ok and "changed" in refused.files[0].message
    assert counters(emulator.base_url)["batches_created"] == 1


@pytest.mark.parametrize(
    ("changes", "endpoint"),
    [
        (
            {
                "model": "anthropic/claude-3-5-haiku-latest",
                "endpoint": "/v1/messages",
                "params": {"max_tokens": 200},
            },
            "/v1/messages",
        ),
        ({"endpoint": "/v1/responses"}, "/v1/responses"),
    ],
    ids=["anthropic-tool", "responses"],
)
def test_structured_answers_on_every_chat_endpoint(
    emulator, tmp_path: Path, changes: dict[str, Any], endpoint: str
) -> None:
    rows = [{"id": n, "title": "t", "body": f"review {n}", "price": 2.0} for n in range(1, 9)]
    rows[3]["body"] = "[[answer:schema]]"
    rows[5]["body"] = "[[answer:refusal]]"
    write_table(tmp_path / "reviews.parquet", rows)
    spec = write_template(tmp_path / "t.yaml", **changes)
    with dagster_instance() as instance:
        summary = driver(instance, emulator.base_url, tmp_path).run(
            [tmp_path / "reviews.parquet"],
            template=spec,
            poll_interval=0.1,
            progress=quiet,
            timeout=60,
        )
    assert summary.ok, summary.render()
    assert [(f.results, f.errors_by_stage) for f in summary.files] == [(6, {"parse": 2})]
    reasons = duckdb.sql(
        f"select input_line, error_message from {_read(tmp_path, 'errors', 'reviews')} order by 1"
    ).fetchall()
    assert [(line, text.split(":")[0]) for line, text in reasons] == [
        (4, "schema violation"),
        (6, "refusal"),
    ]
    table = pq.read_table(tmp_path / "results" / "input_file=reviews" / "part-0.parquet")
    assert set(table.column("endpoint").to_pylist()) == {endpoint}
    for name, kind in LABEL_TYPES.items():
        assert table.schema.field(name).type == kind, name
    assert None not in table.column("sentiment").to_pylist()


def test_embeddings_table_with_a_two_column_unicode_key(emulator, tmp_path: Path) -> None:
    rows = pa.table(
        {
            "shop": ["nord", "nord", "süd", "süd", "東京"],
            "sku": [1, 2, 1, 2, 1],
            "text": ["a red lamp", "a chair", "ein Stuhl", "eine Lampe", "ランプ"],
        }
    )
    folder = tmp_path / "catalog.parquet"  # a folder of hive partitions
    pq.write_to_dataset(rows, folder, partition_cols=["shop"])
    spec = tmp_path / "emb.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "model": "openai/text-embedding-3-small",
                "endpoint": "/v1/embeddings",
                "key": ["shop", "sku"],
                "input": "{{ text }}",
                "params": {"dimensions": 8},
            }
        )
    )
    with dagster_instance() as instance:
        summary = driver(instance, emulator.base_url, tmp_path).run(
            [folder], template=spec, poll_interval=0.1, progress=quiet, timeout=60
        )
    assert summary.ok, summary.render()
    frame = pl.read_parquet(f"{tmp_path}/results/input_file=catalog/*.parquet")
    keys = sorted(zip(frame["shop"].to_list(), frame["sku"].to_list(), strict=True))
    assert keys == [("nord", 1), ("nord", 2), ("süd", 1), ("süd", 2), ("東京", 1)]
    # a unique key: source JOIN results USING (key) is 1:1
    joined = duckdb.sql(
        f"select count(*) from read_parquet('{folder}/*/*.parquet', hive_partitioning=true) s "
        f"join {_read(tmp_path, 'results', 'catalog')} r using (shop, sku)"
    ).fetchall()
    assert joined == [(5,)]
    assert frame["embedding"].list.len().unique().to_list() == [8]


def test_command_line_validate_and_run_a_table(
    emulator, tmp_path: Path, monkeypatch, capsys
) -> None:
    rows, _ = hostile_rows()
    rows = rows[:14]  # no oversized row: the command line test stays quick
    rows[10]["body"] = "short"
    table = write_table(tmp_path / "reviews.parquet", rows)
    spec = write_template(tmp_path / "t.yaml")
    assert main(["validate", str(table), "--template", str(spec)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        f"{table}: row 3 (id=3): column 'title' is null and the template needs it",
        f"{table}: row 13 (id=12): key: the same key as row 12",
    ]
    assert main(["validate", str(table)]) == 1  # no template anywhere: said so
    assert "needs --template FILE or reviews.template.yaml" in capsys.readouterr().out
    missing = write_template(tmp_path / "bad.yaml", prompt="{{ nope }}")
    assert main(["validate", str(table), "--template", str(missing)]) == 1
    assert "column(s) 'nope' that the table does not have" in capsys.readouterr().out

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    data = tmp_path / "data"
    argv = ["run", str(table), "--template", str(spec), "--gateway", emulator.base_url]
    assert main([*argv, "--data-dir", str(data), "--poll-interval", "0.1"]) == 0
    assert "reviews" in capsys.readouterr().out
    assert (data / "inbox" / "reviews.template.yaml").is_file()
    counted = duckdb.sql(
        f"select (select count(*) from {_read(data, 'results', 'reviews')}) + "
        f"(select count(*) from {_read(data, 'errors', 'reviews')})"
    ).fetchall()[0]
    assert counted == (14,)


def test_a_template_naming_a_missing_column_fails_before_anything_is_paid(
    emulator, tmp_path: Path
) -> None:
    write_table(tmp_path / "reviews.parquet", hostile_rows()[0][:3])
    spec = write_template(tmp_path / "t.yaml", prompt="{{ titel }}")
    with dagster_instance() as instance:
        summary = driver(instance, emulator.base_url, tmp_path).run(
            [tmp_path / "reviews.parquet"], template=spec, poll_interval=0.1, progress=quiet
        )
    assert not summary.ok
    message = summary.files[0].message
    assert "'titel'" in message and "does not have" in message and "\n" not in message
    assert counters(emulator.base_url)["batches_created"] == 0
    assert counters(emulator.base_url).get("files_uploaded", 0) == 0
