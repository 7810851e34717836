"""The columnar conversion gives, row for row, what the per-line code gives for the same lines.

Every comparison converts the same lines twice: as shipped (recognized lines in columns, the
rest per line) and with no envelope recognized (every line through normalize.classify_item,
the code the columnar path replaced), then compares the two pairs of Parquet files read back
by pyarrow, DuckDB and polars. The corpora: the bodies of the other results tests in every
shape, Bifrost's documented result items, the benchmark's generated files, hostile lines, and
random bodies and line sequences (hypothesis).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from results_helpers import COLLECTED_AT
from test_results_normalize import (
    CHAT,
    CHAT_FILTERED,
    CHAT_FUNCTION,
    CHAT_PARTS,
    CHAT_TOOL,
    COMPLETION,
    CONVERSE,
    EMBEDDING,
    EMBEDDING_B64,
    ERROR_BODY_400,
    GEMINI,
    MESSAGE,
    RESPONSES,
    RESPONSES_INCOMPLETE,
    RESPONSES_TOOL,
    VERTEX,
)

from batch_pipeline.prices import Price
from batch_pipeline.results import (
    BatchCollector,
    BatchContext,
    PartitionWriter,
    columnar,
    envelope,
    results_to_parquet,
)
from batch_pipeline.results.normalize import recover_custom_id
from batch_pipeline.results.structured import StructuredOutput

ROOT = Path(__file__).resolve().parents[2]
BODIES: dict[str, Any] = {
    "chat": CHAT,
    "chat-parts": CHAT_PARTS,
    "chat-tool": CHAT_TOOL,
    "chat-function": CHAT_FUNCTION,
    "chat-filtered": CHAT_FILTERED,
    "completion": COMPLETION,
    "embedding": EMBEDDING,
    "embedding-base64": EMBEDDING_B64,
    "responses": RESPONSES,
    "responses-incomplete": RESPONSES_INCOMPLETE,
    "responses-tool": RESPONSES_TOOL,
    "message": MESSAGE,
    "gemini": GEMINI,
    "vertex": VERTEX,
    "converse": CONVERSE,
}


@contextmanager
def per_line_only() -> Iterator[None]:
    """No envelope recognizes anything: every line takes the per-line code."""
    with mock.patch.object(envelope, "ENVELOPES", ()):
        yield


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
    return path


def assert_same_files(fast: Path, slow: Path, readers: bool = True) -> None:
    """Both folders hold the same results and errors tables (for polars and DuckDB too)."""
    for name in ("results.parquet", "errors.parquet"):
        left, right = pq.read_table(fast / name), pq.read_table(slow / name)
        assert left.schema == right.schema
        for column in left.column_names:
            assert left.column(column).to_pylist() == right.column(column).to_pylist(), (
                f"{name}: column {column} differs"
            )
        if not readers:
            continue
        assert pl.read_parquet(fast / name).equals(pl.read_parquet(slow / name))
        for a, b in ((fast, slow), (slow, fast)):
            assert duckdb.sql(
                f"select count(*) from (select * from read_parquet('{a / name}') "
                f"except all select * from read_parquet('{b / name}'))"
            ).fetchall() == [(0,)]


@contextmanager
def columnar_rows() -> Iterator[list[int]]:
    """Counts the rows the columnar path makes (one entry per block)."""
    counts: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        made = rows(*args, **kwargs)
        counts.append(made[0].num_rows + made[1].num_rows)
        return made

    rows = columnar.rows
    with mock.patch.object(columnar, "rows", counted):
        yield counts


def convert_both(
    tmp_path: Path,
    lines: list[bytes],
    provider: str | None = "openai",
    readers: bool = True,
    fast_rows: int | None = None,
) -> Path:
    """Convert the lines both ways, check the outputs are equal, return the columnar one;
    `fast_rows`: how many rows the columnar path must have made."""
    source = write_lines(tmp_path / "lines.jsonl", lines)
    with columnar_rows() as made:
        results_to_parquet(
            source, None, tmp_path / "fast", provider=provider, collected_at=COLLECTED_AT
        )
    if fast_rows is not None:
        assert sum(made) == fast_rows
    with per_line_only():
        results_to_parquet(
            source, None, tmp_path / "slow", provider=provider, collected_at=COLLECTED_AT
        )
    assert_same_files(tmp_path / "fast", tmp_path / "slow", readers)
    return tmp_path / "fast"


def collect_both(
    tmp_path: Path,
    lines: list[bytes],
    expected: dict[str, int],
    ctx: BatchContext,
    status: str = "completed",
    readers: bool = True,
) -> None:
    """BatchCollector over the lines both ways: equal rows and equal stats."""
    stats = []
    for name, patch in (("fast", nullcontext), ("slow", per_line_only)):
        out = tmp_path / name
        with (
            patch(),
            PartitionWriter(
                out / "results.parquet", out / "errors.parquet", collected_at=COLLECTED_AT
            ) as writer,
        ):
            collector = BatchCollector(writer, ctx, expected)
            collector.add_lines(lines, source="out.jsonl")
            stats.append(collector.finish(status=status))
    assert stats[0] == stats[1]
    assert_same_files(tmp_path / "fast", tmp_path / "slow", readers)
    rows = [
        row
        for name in ("results.parquet", "errors.parquet")
        for row in pq.read_table(tmp_path / "fast" / name).to_pylist()
    ]
    assert sorted(row["custom_id"] for row in rows) == sorted(expected)
    assert all(row["input_line"] == expected[row["custom_id"]] for row in rows)
    model = read_in_order(lines, expected)
    assert (stats[0].duplicates_ignored, stats[0].unknown_ids_ignored) == model[:2]
    assert stats[0].unparseable_lines == model[2]
    by_id = {row["custom_id"]: row for row in rows}
    for custom_id, line in model[3].items():  # the line that won is the row's line
        row = by_id[custom_id]
        kept = row.get("raw") or row.get("body") or ""
        if row.get("stage") != "parse" and line is not None:
            assert kept in line.decode("utf-8", "replace")


def read_in_order(
    lines: list[bytes], expected: dict[str, int]
) -> tuple[int, int, int, dict[str, bytes | None]]:
    """What reading the lines one by one gives (the collector's contract, stated plainly):
    duplicates, unknown ids, unreadable lines without an id, and the line each id's row
    comes from (None for an id known only from unreadable lines)."""
    duplicates = unknown = unparseable = 0
    winner: dict[str, bytes | None] = {}
    pending: set[str] = set()
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            item = None
            if not line.strip():
                continue
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        readable = isinstance(custom_id, str) and custom_id != ""
        if not readable:
            custom_id = recover_custom_id(line)
            if custom_id is None:
                unparseable += 1
            elif custom_id not in expected:
                unknown += 1
            elif custom_id in winner or custom_id in pending:
                duplicates += 1
            else:
                pending.add(custom_id)
            continue
        if custom_id not in expected:
            unknown += 1
        elif custom_id in winner:
            duplicates += 1
        else:
            if custom_id in pending:
                pending.discard(custom_id)
                duplicates += 1
            winner[custom_id] = line
    winner.update(dict.fromkeys(pending))
    return duplicates, unknown, unparseable, winner


def dump(item: Any) -> bytes:
    """Compact JSON, integers of any size included (orjson stops at 64 bits)."""
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()


def openai_line(custom_id: str, status: int, body: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"req_{custom_id}", "body": body},
        "error": None,
        **extra,
    }


def anthropic_line(custom_id: str, message: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


# The ways a producer may write the same item: compact (orjson, Go), Python's default with
# spaces, ASCII escapes, and a line ending in CRLF.
STYLES = {
    "compact": lambda item: orjson.dumps(item),
    "spaced": lambda item: json.dumps(item).encode(),
    "ascii": lambda item: json.dumps(item, ensure_ascii=True, separators=(",", ":")).encode(),
    "crlf": lambda item: orjson.dumps(item) + b"\r",
}


@pytest.mark.parametrize("style", list(STYLES))
def test_every_shape_in_every_style(tmp_path: Path, style: str) -> None:
    dump = STYLES[style]
    lines = []
    for index, (name, body) in enumerate(BODIES.items()):
        lines.append(dump(openai_line(f"{name}-ok", 200, body)))
        lines.append(dump(anthropic_line(f"{name}-anthropic", body)))
        lines.append(dump(openai_line(f"{name}-{index}-400", 400, ERROR_BODY_400)))
    # lists as chat content, base64 embeddings, Vertex and Converse bodies take the per-line path
    out = convert_both(tmp_path, lines, fast_rows=3 * len(BODIES) - 8)
    results = pq.read_table(out / "results.parquet")
    assert results.num_rows == 2 * len(BODIES)


def test_bodies_are_the_providers_bytes(tmp_path: Path) -> None:
    """The body column is the body's exact text, whichever path took the line."""
    bodies = [
        b'{"object": "chat.completion", "choices": [{"message": {"content": "caf\\u00e9"}}]}',
        b'{"n":1.50,"big":123456789012345678901234567890,"e":1E5,"s":"\\/"}',
        b'{ "choices" : [ ] , "usage" : { "prompt_tokens" : 3 } }',
        b'{"choices":[{"message":{"content":["not","text"]}}]}',  # the per-line path
    ]
    lines = [
        b'{"custom_id":"c%d","response":{"status_code":200,"body":%s}}' % (i, body)
        for i, body in enumerate(bodies)
    ]
    out = convert_both(tmp_path, lines)
    stored = pq.read_table(out / "results.parquet").column("body").to_pylist()
    assert [text.encode() for text in stored] == bodies


def test_bifrost_documented_result_items(tmp_path: Path) -> None:
    examples = ROOT / "tests" / "gateway" / "data" / "bifrost_notes_examples.jsonl"
    items = [json.loads(line) for line in examples.read_text().splitlines()]
    lines = [orjson.dumps(e["json"]) for e in items if e["model"] == "BatchResultItem"]
    assert len(lines) >= 8
    convert_both(tmp_path, lines)


HOSTILE = [
    b"",
    b"   ",
    b"not json",
    b'{"custom_id": "t1", "response": {"status_code": 200, "bo',  # truncated
    b'{"custom_id":"t2","response":{"status_code":200,"body":{"a":1}},"error":null',
    b'{"custom_id":"t3","response":{"status_code":200,"body":{"a":1}}}}',  # one brace too many
    b'{"custom_id":"t4","response":{"status_code":200,"body":{"a":1},"x":{}},"error":null}',
    b'{"custom_id":"t5","response":{"status_code":200,"body":{"a":1}{"b":2}},"error":null}',
    b'{"custom_id":"t6","response":{"status_code":200,"body":{"a":"}"},"z":"{"}}',
    b'{"custom_id":"t7","response":{"status_code":200,"body":{"choices":[{"message":{"content":"x"}}]},"body":{"data":[]}}}',
    b'{"custom_id":"t8","response":{"status_code":200.0,"body":{}}}',
    b'{"custom_id":"t9","response":{"status_code":200,"request_id":null,"body":{}}}',
    b'{"custom_id":"t10","response":{"status_code":200,"request_id":"","body":{"usage":{"prompt_tokens":1.0}}}}',
    b'{"custom_id":"t11","response":{"status_code":200,"body":{"usage":{"prompt_tokens":true}}}}',
    b'{"custom_id":"t12","response":{"status_code":200,"body":{"model":5,"choices":[]}}}',
    b'{"custom_id":"t13","response":{"status_code":200,"body":{"text":null,"finish_reason":"STOP"}}}',
    b'{"custom_id":"t14","response":{"status_code":200,"body":{"finish_reason":"STOP"}}}',
    b'{"custom_id":"t15","response":{"status_code":200,"body":{"usage":{"prompt_tokens_details":{},"input_tokens_details":{"cached_tokens":4}}}}}',
    b'{"custom_id":"t16","response":{"status_code":200,"body":{"usage":{"completion_tokens_details":{},"thoughtsTokenCount":9}}}}',
    b'{"custom_id":"t17","response":{"status_code":200,"body":{"usage":{"input_tokens":99999999999999999999}}}}',
    b'{"custom_id":"t18","response":{"status_code":200,"body":{"x":"\\ud800"}}}',  # lone surrogate
    b'{"custom_id":"t19","response":{"status_code":200,"body":{"x":"\xff"}}}',  # not UTF-8
    b'{"custom_id":"t20","response":{"status_code":200,"body":{"x":NaN}}}',
    b'{"custom_id":"t\\u0032\\"1","response":{"status_code":200,"body":{}}}',  # escapes in the id
    b'{"custom_id":"","response":{"status_code":200,"body":{}}}',
    b'{"custom_id":"t22","response":{"status_code":2000000000,"body":{}}}',
    b'{"custom_id":"t23","response":{"status_code":204,"body":{"data":[{"embedding":"AAAA"}]}}}',
    b'{"custom_id":"t24","response":{"status_code":503,"body":{"error":"overloaded"}}}',
    b'{"custom_id":"t25","response":{"status_code":429,"body":{"error":{"code":429}}}}',
    b'{"custom_id":"t26","response":{"status_code":500,"body":{"message":""}}}',
    b'{"custom_id":"t27","response":{"status_code":404,"body":{"error":{"code":"","type":"","message":""}}}}',
    b'{"custom_id":"t28","response":{"status_code":200,"body":{"choices":[null,{"text":"x"}]}}}',
    b'{"custom_id":"t29","response":{"status_code":200,"body":{"data":[{"embedding":[1,2.5,1e-50,3.5e38,1e39]}]}}}',
    b'{"custom_id":"t30","response":{"status_code":200,"body":{"object":"response","output":null,"status":"completed"}}}',
    b'{"custom_id":"t31","response":{"status_code":200,"body":{"type":"message","content":[{"type":"text","text":""}]}}}',
    b'{"custom_id":"t32","response":{"status_code":200,"body":{"choices":[{"message":null,"text":"legacy","finish_reason":"LENGTH"}]}}}',
    b'{"custom_id":"t33","result":{"type":"succeeded","message":{"content":[]}},"error":{"code":"x"}}',
    b'{"custom_id":"t34","result":{"type":"succeeded","message":{"content":[]}}}',
    b'{"custom_id":"t35","result":{"type":"expired"}}',
    b'{"id":"x","custom_id":"t36","response":null,"error":{"code":"batch_expired","message":"late"}}',
    b'{"custom_id":"t37","response":{"status_code":200,"body":{}},"error":{"code":"server_error"}}',
    b'{"custom_id":"t38","response":{"body":{},"request_id":"r","status_code":200},"error":null}',
    b'\t{"custom_id":"t39","response":{"status_code":200,"body":{}}}',
    b'{"custom_id":"t40","response":{"status_code":200,"body":{}}}\x0c',
    b'{"custom_id":"t41","response":{"status_code":409,"body":{"error":{"type":"conflict"}}}}',
    b'{"custom_id":"t42","response":{"status_code":200,"body":{"object":"response","status":"completed","output":[{"type":"message","content":[{"type":"refusal","text":"no"},{"type":"output_text","text":"yes"}]}]}}}',
    b'{"custom_id":"t43","response":{"status_code":200,"body":{"usage":{"completion_tokens_details":{"reasoning_tokens":null},"thoughtsTokenCount":5}}}}',
    b'{"custom_id":"t44","response":{"status_code":200,"body":{"usage":{"input_tokens":5,"output_tokens":null,"cache_read_input_tokens":2,"thoughtsTokenCount":1}}}}',
    b'{"custom_id":"t45","response":{"status_code":200,"body":{"data":[{"embedding":[1,null,"x"]}]}}}',
    b"[1, 2]",
    b'{"response": {"status_code": 200}}',
]


def test_hostile_lines(tmp_path: Path) -> None:
    out = convert_both(tmp_path, HOSTILE)
    rows = len(pq.read_table(out / "results.parquet")) + len(pq.read_table(out / "errors.parquet"))
    assert rows == len(HOSTILE) - 2  # every non-blank line is one row


def test_hostile_lines_in_a_batch(tmp_path: Path) -> None:
    """The collector's bookkeeping too: duplicates, unknown ids, unreadable copies of known
    ids before and after their readable line."""
    ok = [orjson.dumps(openai_line(f"k{i}", 200, CHAT)) for i in range(6)]
    lines = [
        b'{"custom_id": "k0", "response": {"status',  # unreadable copy before the real one
        ok[0],
        ok[1],
        ok[1],  # duplicate
        b'{"custom_id": "k1", "resp',  # unreadable copy after the real one
        orjson.dumps(openai_line("zz", 200, CHAT)),  # unknown id
        b'{"custom_id": "k2", "resp',  # only an unreadable copy: a parse row
        b'{"custom_id": "k2", "again',
        *HOSTILE,
        ok[3],
        orjson.dumps(openai_line("k4", 200, {"choices": [{"message": {"content": ["x"]}}]})),
        ok[4],
    ]
    expected = {f"k{i}": i + 1 for i in range(6)} | {f"t{i}": 100 + i for i in range(1, 46)}
    ctx = BatchContext("batch_1", "openai", price=Price(input_per_1m=0.15, output_per_1m=0.6))
    collect_both(tmp_path, lines, expected, ctx)


def test_structured_answers(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "negative"]},
            "score": {"type": "number"},
        },
        "required": ["sentiment"],
        "additionalProperties": False,
    }
    structured = StructuredOutput("review", schema)
    answers = [
        '{"sentiment": "positive", "score": 0.5}',
        '{"sentiment": "meh"}',
        "not json\r\n",
        '{"sentiment": "negative", "extra": 1}',
    ]
    lines = [
        orjson.dumps(
            openai_line(
                f"s{i}", 200, {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}
            )
        )
        for i, text in enumerate(answers)
    ]
    lines.append(
        orjson.dumps(
            openai_line("s9", 200, {"choices": [{"message": {"content": None, "refusal": "no"}}]})
        )
    )
    expected = {f"s{i}": i + 1 for i in (0, 1, 2, 3, 9)}
    collect_both(tmp_path, lines, expected, BatchContext("b", "openai", structured=structured))


@pytest.fixture(scope="module")
def generate() -> Any:
    spec = importlib.util.spec_from_file_location(
        "results_data", ROOT / "bench" / "results_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


@pytest.mark.parametrize("embedding_share", [0.0, 0.1, 1.0])
def test_benchmark_files(tmp_path: Path, generate: Any, embedding_share: float) -> None:
    output, errors = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    generate(output, errors, 2000, seed=5, embedding_share=embedding_share)
    lines = output.read_bytes().splitlines() + errors.read_bytes().splitlines()
    # every line but the expired ones (an error object, no body) takes the columnar path
    expired = sum(1 for line in lines if b'"response":null' in line)
    out = convert_both(tmp_path, lines, fast_rows=2000 - expired)
    # compact input: the body is also what the old code wrote (the body parsed and re-dumped)
    for body in pq.read_table(out / "results.parquet").column("body").to_pylist()[:200]:
        assert orjson.dumps(orjson.loads(body)).decode() == body


# Random bodies: the keys the shapes and usage read, with values of every JSON type.
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, width=32),
    st.sampled_from(
        [
            "",
            "stop",
            "STOP",
            "length",
            "end_turn",
            "message",
            "response",
            "completed",
            "incomplete",
            "text",
            "output_text",
            "function_call",
            "max_tokens",
            'naïve 東京 "q"',
        ]
    ),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "text",
                    "content",
                    "reason",
                    "embedding",
                    "message",
                    "finish_reason",
                    "cached_tokens",
                    "reasoning_tokens",
                    "code",
                ]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
_COUNT = st.one_of(st.none(), st.integers(0, 10**6), st.just(1.5), st.just(True))
_USAGE = st.fixed_dictionaries(
    {},
    optional={
        name: _COUNT
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cachedContentTokenCount",
            "thoughtsTokenCount",
        )
    }
    | {
        name: st.one_of(st.none(), st.fixed_dictionaries({}, optional={"cached_tokens": _COUNT}))
        for name in ("prompt_tokens_details", "input_tokens_details")
    }
    | {
        name: st.one_of(st.none(), st.fixed_dictionaries({}, optional={"reasoning_tokens": _COUNT}))
        for name in ("completion_tokens_details", "output_tokens_details")
    },
)
_BLOCKS = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "output_text", "tool_use", "refusal"])},
            optional={"text": st.one_of(st.text(max_size=5), st.none())},
        ),
        _JSON,
    ),
    max_size=3,
)
_BODY = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=8), _JSON),
        "object": st.sampled_from(["chat.completion", "response", "list"]),
        "choices": st.one_of(
            _JSON,
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "message": st.one_of(
                            st.none(),
                            st.fixed_dictionaries(
                                {}, optional={"content": st.one_of(st.text(max_size=5), _BLOCKS)}
                            ),
                        ),
                        "text": _SCALARS,
                        "finish_reason": _SCALARS,
                    },
                ),
                max_size=2,
            ),
        ),
        "data": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "embedding": st.one_of(
                        st.lists(st.floats(width=32), max_size=3), st.just("AACAPwAAAMA="), _JSON
                    )
                },
            ),
            max_size=2,
        ),
        "output": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["message", "function_call", "reasoning"])},
                    optional={"content": _BLOCKS},
                ),
                _JSON,
            ),
            max_size=3,
        ),
        "status": _SCALARS,
        "incomplete_details": st.one_of(st.none(), st.fixed_dictionaries({"reason": _SCALARS})),
        "type": _SCALARS,
        "content": st.one_of(_BLOCKS, _SCALARS),
        "stop_reason": _SCALARS,
        "text": _SCALARS,
        "finish_reason": _SCALARS,
        "usage": st.one_of(_USAGE, _SCALARS),
        "error": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"code": _SCALARS, "type": _SCALARS, "message": _SCALARS}
            ),
            _SCALARS,
        ),
        "message": _SCALARS,
    },
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    bodies=st.lists(
        st.tuples(
            st.sampled_from([0, 200, 201, 299, 300, 400, 404, 408, 409, 429, 500, 503]),
            _BODY,
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_random_bodies(tmp_path_factory: pytest.TempPathFactory, bodies: list) -> None:
    tmp_path = tmp_path_factory.mktemp("random")
    lines = [
        dump(anthropic_line(f"r{i}", body) if anthropic else openai_line(f"r{i}", status, body))
        for i, (status, body, anthropic) in enumerate(bodies)
    ]
    convert_both(tmp_path, lines, readers=False)


_LINE_KINDS = st.sampled_from(["ok", "ok-spaced", "failed", "odd", "truncated", "garbage", "blank"])


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sequence=st.lists(st.tuples(st.integers(0, 7), _LINE_KINDS), max_size=40),
    status=st.sampled_from(["completed", "expired", "cancelled", "failed"]),
)
def test_random_batches(
    tmp_path_factory: pytest.TempPathFactory, sequence: list, status: str
) -> None:
    """Random orders of readable, odd, unreadable and repeated lines over a few ids (id 7 is
    not expected)."""
    lines = []
    for number, kind in sequence:
        custom_id = f"id{number}"
        if kind == "ok":
            lines.append(orjson.dumps(openai_line(custom_id, 200, CHAT)))
        elif kind == "ok-spaced":
            lines.append(json.dumps(openai_line(custom_id, 200, EMBEDDING)).encode())
        elif kind == "failed":
            lines.append(orjson.dumps(openai_line(custom_id, 429, ERROR_BODY_400)))
        elif kind == "odd":
            lines.append(orjson.dumps(openai_line(custom_id, 200, CHAT_PARTS)))
        elif kind == "truncated":
            lines.append(orjson.dumps(openai_line(custom_id, 200, CHAT))[:40])
        elif kind == "garbage":
            lines.append(b"\xff garbage")
        else:
            lines.append(b"")
    expected = {f"id{n}": 10 * n + 1 for n in range(7)}
    tmp_path = tmp_path_factory.mktemp("batch")
    collect_both(
        tmp_path, lines, expected, BatchContext("b", "openai"), status=status, readers=False
    )


def test_lines_across_many_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks: rows still come out in line order, with the right line numbers."""
    from batch_pipeline.results import blocks

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 700)
    lines = [line for line in HOSTILE if line.strip()] * 3
    convert_both(tmp_path, lines)


def test_rows_keep_their_columns_and_types(tmp_path: Path, collected_at: datetime) -> None:
    lines = [
        orjson.dumps(openai_line("a", 200, EMBEDDING)),
        orjson.dumps(openai_line("b", 200, CHAT)),
    ]
    out = convert_both(tmp_path, lines)
    table = pq.read_table(out / "results.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.column("embedding").to_pylist()[0] == [0.5, -0.25, 0.125]
    assert table.column("collected_at").to_pylist() == [collected_at, collected_at]
