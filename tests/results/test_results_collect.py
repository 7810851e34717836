"""BatchCollector: one row per expected request of a batch, whatever the provider output holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from results_helpers import COLLECTED_AT, by_custom_id, read_rows

from batch_pipeline.results import (
    BatchCollector,
    BatchContext,
    CollectStats,
    PartitionWriter,
)

CTX = BatchContext("batch_1", "openai", "openai/gpt-4o-mini", "/v1/chat/completions")
EXPECTED = {"a": 1, "b": 2, "c": 4, "d": 7}


def chat_body(text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def ok_line(custom_id: str, text: str = "fine") -> bytes:
    item = {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"req_{custom_id}", "body": chat_body(text)},
        "error": None,
    }
    return json.dumps(item).encode() + b"\n"


def failed_line(custom_id: str, status: int = 400) -> bytes:
    body = {"error": {"message": "bad", "type": "invalid_request_error", "code": None}}
    item = {"custom_id": custom_id, "response": {"status_code": status, "body": body}}
    return json.dumps(item).encode() + b"\n"


class Run:
    """One PartitionWriter run; rows are read back after the with block closes."""

    def __init__(self, tmp_path: Path) -> None:
        self.results = tmp_path / "results.parquet"
        self.errors = tmp_path / "errors.parquet"

    def rows(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        return by_custom_id(read_rows(self.results)), by_custom_id(read_rows(self.errors))


def collect(
    tmp_path: Path,
    collected_at: datetime,
    lines: list[bytes | str],
    *,
    status: str = "completed",
    expected: dict[str, int] = EXPECTED,
    batch_errors: list[dict[str, Any]] | None = None,
) -> tuple[CollectStats, Run]:
    run = Run(tmp_path)
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        collector = BatchCollector(writer, CTX, expected)
        collector.add_lines(lines, source="out.jsonl")
        stats = collector.finish(status=status, batch_errors=batch_errors or ())
    return stats, run


def assert_invariant(run: Run, expected: dict[str, int]) -> None:
    """Each expected custom_id in exactly one row, with its input line."""
    results = read_rows(run.results)
    errors = read_rows(run.errors)
    ids = [row["custom_id"] for row in results + errors]
    assert sorted(ids) == sorted(expected)
    for row in results + errors:
        assert row["input_line"] == expected[row["custom_id"]]


def test_completed_batch_rows_carry_the_batch_context(
    tmp_path: Path, collected_at: datetime
) -> None:
    lines = [ok_line("a", "alpha"), failed_line("b"), ok_line("c"), ok_line("d")]
    stats, run = collect(tmp_path, collected_at, lines)
    results, errors = run.rows()
    assert results["a"] | {"body": None} == {
        "custom_id": "a",
        "input_line": 1,
        "batch_id": "batch_1",
        "provider": "openai",
        "model": "openai/gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "status_code": 200,
        "request_id": "req_a",
        "output_text": "alpha",
        "finish_reason": "stop",
        "embedding": None,
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "cached_tokens": None,
        "reasoning_tokens": None,
        "cost_usd": None,  # no price in this context
        "body": None,
        "original_file": None,
        "attempt": None,
        "collected_at": collected_at,
    }
    assert json.loads(results["a"]["body"]) == chat_body("alpha")
    assert errors["b"]["stage"] == "request"
    assert json.loads(errors["b"]["raw"]) == json.loads(failed_line("b"))
    assert stats == CollectStats(
        batch_id="batch_1",
        expected=4,
        seen=4,
        results=3,
        errors=1,
        duplicates_ignored=0,
        unknown_ids_ignored=0,
        unparseable_lines=0,
        unparseable_refs=[],
        by_stage={"request": 1},
    )
    assert_invariant(run, EXPECTED)


def test_body_model_and_endpoint_are_used_when_the_context_lacks_them(
    tmp_path: Path, collected_at: datetime
) -> None:
    run = Run(tmp_path)
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        collector = BatchCollector(writer, BatchContext("b", "openai", None, None), {"a": 1})
        collector.add_lines([ok_line("a")], source="out.jsonl")
        collector.finish(status="completed")
    row = read_rows(run.results)[0]
    assert (row["model"], row["endpoint"]) == ("gpt-4o-mini-2024-07-18", "/v1/chat/completions")


@pytest.mark.parametrize(
    ("status", "stage", "code", "retryable"),
    [
        ("completed", "missing", "missing_result", True),
        ("ended", "missing", "missing_result", True),
        ("expired", "expired", "batch_expired", True),
        ("cancelled", "canceled", "batch_cancelled", True),
        ("canceled", "canceled", "batch_cancelled", True),
        ("failed", "batch", "token_limit_exceeded", False),
    ],
)
def test_finish_accounts_for_every_unseen_request_by_batch_status(
    tmp_path: Path,
    collected_at: datetime,
    status: str,
    stage: str,
    code: str,
    retryable: bool,
) -> None:
    batch_errors = [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]
    stats, run = collect(
        tmp_path, collected_at, [ok_line("b")], status=status, batch_errors=batch_errors
    )
    results, errors = run.rows()
    assert list(results) == ["b"]
    assert sorted(errors) == ["a", "c", "d"]
    for row in errors.values():
        assert (row["stage"], row["error_code"], row["retryable"]) == (stage, code, retryable)
        assert row["raw"] is None
        assert row["batch_id"] == "batch_1"
    assert [row["input_line"] for row in read_rows(run.errors)] == [1, 4, 7]
    assert stats.by_stage == {stage: 3}
    assert (stats.results, stats.errors, stats.seen) == (1, 3, 1)
    assert_invariant(run, EXPECTED)


def test_failed_batch_message_joins_the_batch_errors(
    tmp_path: Path, collected_at: datetime
) -> None:
    batch_errors = [
        {"code": "invalid_json", "message": "Line is not JSON", "line": 3},
        {"code": "invalid_json", "message": "Line is not JSON", "line": 9},
        {"code": "model_not_found", "message": "No such model"},
    ]
    _, run = collect(tmp_path, collected_at, [], status="failed", batch_errors=batch_errors)
    row = read_rows(run.errors)[0]
    assert row["error_code"] == "invalid_json,model_not_found"
    assert row["error_message"] == (
        "invalid_json: Line is not JSON (line 3); invalid_json: Line is not JSON (line 9); "
        "model_not_found: No such model"
    )


def test_failed_batch_without_errors_still_says_so(tmp_path: Path, collected_at: datetime) -> None:
    _, run = collect(tmp_path, collected_at, [], status="failed")
    row = read_rows(run.errors)[0]
    assert (row["stage"], row["error_code"]) == ("batch", "batch_failed")
    assert "without an error message" in row["error_message"]


def test_duplicates_and_unknown_ids_are_ignored_and_counted(
    tmp_path: Path, collected_at: datetime
) -> None:
    lines = [
        ok_line("a", "first"),
        ok_line("a", "second"),
        failed_line("a"),
        ok_line("zz"),
        ok_line("b"),
        "\n",
        ok_line("c").decode(),
        ok_line("d"),
    ]
    stats, run = collect(tmp_path, collected_at, lines)
    results, errors = run.rows()
    assert results["a"]["output_text"] == "first"
    assert errors == {}
    assert (stats.duplicates_ignored, stats.unknown_ids_ignored) == (2, 1)
    assert_invariant(run, EXPECTED)


def test_unreadable_lines_become_parse_rows_or_missing_rows(
    tmp_path: Path, collected_at: datetime
) -> None:
    lines = [
        ok_line("a"),
        b'{"custom_id": "b", "response": {"status_code": 200, "bo\n',  # truncated, id readable
        b"\xff\xfe not json at all\n",  # nothing to recover
        b'{"response": {"status_code": 200}}\n',  # JSON without custom_id
        b'{"custom_id": "zz", "resp\n',  # readable id of another batch
        ok_line("c"),
    ]
    stats, run = collect(tmp_path, collected_at, lines)
    results, errors = run.rows()
    assert sorted(results) == ["a", "c"]
    assert errors["b"]["stage"] == "parse"
    assert errors["b"]["error_message"].startswith("out.jsonl:2: ")
    assert errors["b"]["raw"] == '{"custom_id": "b", "response": {"status_code": 200, "bo'
    assert errors["d"]["stage"] == "missing"
    assert "2 result line(s) could not be read" in errors["d"]["error_message"]
    assert "out.jsonl:3, out.jsonl:4" in errors["d"]["error_message"]
    assert stats.unparseable_lines == 2
    assert stats.unparseable_refs == ["out.jsonl:3", "out.jsonl:4"]
    assert stats.unknown_ids_ignored == 1
    assert_invariant(run, EXPECTED)


def test_output_and_error_files_of_one_batch(tmp_path: Path, collected_at: datetime) -> None:
    run = Run(tmp_path)
    expired = {
        "custom_id": "d",
        "response": None,
        "error": {"code": "batch_expired", "message": "late"},
    }
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        collector = BatchCollector(writer, CTX, EXPECTED)
        collector.add_lines(iter([ok_line("a"), ok_line("b")]), source="output.jsonl")
        collector.add_lines([failed_line("c", 500), json.dumps(expired)], source="errors.jsonl")
        stats = collector.finish(status="expired")
    _, errors = run.rows()
    assert (errors["c"]["status_code"], errors["c"]["retryable"]) == (500, True)
    assert (errors["d"]["stage"], errors["d"]["error_message"]) == ("expired", "late")
    assert stats.by_stage == {"request": 1, "expired": 1}
    assert_invariant(run, EXPECTED)


def anthropic_items() -> Iterator[dict[str, Any]]:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 8, "output_tokens": 4},
    }
    yield {"custom_id": "a", "result": {"type": "succeeded", "message": message}}
    yield {
        "custom_id": "b",
        "result": {"type": "errored"},
        "error": {"code": "error", "message": ""},
    }
    yield {"custom_id": "c", "result": {"type": "canceled"}}
    yield {"result": {"type": "expired"}}


def test_results_endpoint_items(tmp_path: Path, collected_at: datetime) -> None:
    run = Run(tmp_path)
    ctx = BatchContext(
        "msgbatch_1", "anthropic", "anthropic/claude-3-5-haiku-latest", "/v1/messages"
    )
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        collector = BatchCollector(writer, ctx, EXPECTED)
        collector.add_items(anthropic_items())
        stats = collector.finish(status="ended")
    results, errors = run.rows()
    assert results["a"]["output_text"] == "Hi"
    assert results["a"]["total_tokens"] == 12
    assert json.loads(results["a"]["body"])["id"] == "msg_1"
    assert errors["b"]["stage"] == "request"
    assert json.loads(errors["b"]["raw"])["result"] == {"type": "errored"}
    assert errors["c"]["stage"] == "canceled"
    assert errors["d"]["stage"] == "missing"
    assert stats.unparseable_refs == ["results item 4"]
    assert_invariant(run, EXPECTED)


@pytest.mark.parametrize(
    ("provider", "found"),
    [
        pytest.param("gemini", {"a", "c", "d"}, id="gemini-reads-positions"),
        pytest.param("anthropic", set(), id="others-do-not"),
    ],
)
def test_positional_ids_name_the_request_at_that_position(
    tmp_path: Path, collected_at: datetime, provider: str, found: set[str]
) -> None:
    """Gemini items whose key Bifrost could not read come back as `request-<n>` (n from 0 in
    the batch's order); a known id keeps its meaning and an out-of-range position is unknown."""
    run = Run(tmp_path)
    flat = {"text": "Hallo", "finish_reason": "STOP"}
    items = [
        {"custom_id": "request-0", "response": {"status_code": 200, "body": flat}},
        {"custom_id": "c", "response": {"status_code": 200, "body": flat}},
        {"custom_id": "request-3", "error": {"code": "429", "message": "quota"}},
        {"custom_id": "request-4", "response": {"status_code": 200, "body": flat}},
    ]
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        collector = BatchCollector(writer, BatchContext("batches/1", provider), EXPECTED)
        collector.add_items(items)
        stats = collector.finish(status="completed")
    results, errors = run.rows()
    seen = set(results) | {cid for cid, row in errors.items() if row["stage"] != "missing"}
    assert seen == found | {"c"}
    assert stats.unknown_ids_ignored == 4 - len(found | {"c"})
    if provider == "gemini":
        assert errors["d"]["status_code"] == 429
    assert_invariant(run, EXPECTED)


def test_results_items_serialized_one_per_line(tmp_path: Path, collected_at: datetime) -> None:
    lines = [json.dumps(item) for item in anthropic_items()]
    _, run = collect(tmp_path, collected_at, lines, status="ended")
    results, errors = run.rows()
    assert list(results) == ["a"]
    assert sorted(errors) == ["b", "c", "d"]


def test_finish_twice_or_adding_after_finish_is_refused(
    tmp_path: Path, collected_at: datetime
) -> None:
    run = Run(tmp_path)
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        collector = BatchCollector(writer, CTX, {"a": 1})
        collector.finish(status="completed")
        with pytest.raises(RuntimeError, match="finish"):
            collector.finish(status="completed")
        with pytest.raises(RuntimeError, match="finish"):
            collector.add_lines([ok_line("a")], source="late.jsonl")
    assert len(read_rows(run.errors)) == 1


def test_several_batches_share_one_partition_writer(tmp_path: Path, collected_at: datetime) -> None:
    run = Run(tmp_path)
    first, second = {"a": 1, "b": 2}, {"c": 3, "d": 4}
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        one = BatchCollector(writer, BatchContext("batch_1", "openai", None, None), first)
        two = BatchCollector(writer, BatchContext("batch_2", "openai", None, None), second)
        one.add_lines([ok_line("a"), ok_line("c")], source="one.jsonl")
        two.add_lines([ok_line("c"), ok_line("a")], source="two.jsonl")
        assert one.finish(status="completed").errors == 1
        assert two.finish(status="expired").errors == 1
    results, errors = run.rows()
    assert (results["a"]["batch_id"], results["c"]["batch_id"]) == ("batch_1", "batch_2")
    assert (errors["b"]["stage"], errors["d"]["stage"]) == ("missing", "expired")
    assert writer.stats.results_rows + writer.stats.errors_rows == 4


OUTPUT_KINDS = st.sampled_from(["ok", "failed", "expired", "garbage", "truncated", "absent"])


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(st.tuples(OUTPUT_KINDS, st.integers(0, 2)), min_size=0, max_size=12),
    unknown=st.integers(0, 3),
    status=st.sampled_from(["completed", "ended", "expired", "cancelled", "failed"]),
    data=st.data(),
)
def test_invariant_holds_whatever_the_output(
    tmp_path_factory: pytest.TempPathFactory,
    plan: list[tuple[str, int]],
    unknown: int,
    status: str,
    data: st.DataObject,
) -> None:
    expected = {f"req-{index}": index * 2 + 1 for index in range(len(plan))}
    lines: list[bytes] = []
    for (kind, repeats), custom_id in zip(plan, expected, strict=True):
        line = {
            "ok": ok_line(custom_id),
            "failed": failed_line(custom_id),
            "expired": json.dumps(
                {"custom_id": custom_id, "error": {"code": "batch_expired"}}
            ).encode(),
            "garbage": b"}{",
            "truncated": ok_line(custom_id)[:40],
            "absent": b"",
        }[kind]
        lines.extend([line] * (1 + repeats))
    lines.extend(ok_line(f"other-{index}") for index in range(unknown))
    lines = data.draw(st.permutations(lines))
    _, run = collect(
        tmp_path_factory.mktemp("run"), COLLECTED_AT, lines, status=status, expected=expected
    )
    assert_invariant(run, expected)


def test_a_readable_line_wins_over_an_unreadable_copy_of_the_same_request(
    tmp_path: Path, collected_at: datetime
) -> None:
    truncated = ok_line("a")[:60]
    lines = [truncated, ok_line("a"), truncated, ok_line("b")[:50], ok_line("b")[:50]]
    stats, run = collect(tmp_path, collected_at, lines, expected={"a": 1, "b": 2})
    results, errors = run.rows()
    assert list(results) == ["a"]
    assert errors["b"]["stage"] == "parse"
    assert errors["b"]["raw"] == ok_line("b")[:50].decode()
    assert stats.duplicates_ignored == 3
    assert stats.by_stage == {"parse": 1}


def test_gateway_result_item_models_are_accepted(tmp_path: Path, collected_at: datetime) -> None:
    from batch_pipeline.gateway.models import BatchResultItem

    models = [BatchResultItem.model_validate(item) for item in anthropic_items()]
    run = Run(tmp_path)
    with PartitionWriter(run.results, run.errors, collected_at=collected_at) as writer:
        collector = BatchCollector(writer, CTX, EXPECTED)
        collector.add_items(models)
        collector.finish(status="ended")
    results, errors = run.rows()
    assert results["a"]["output_text"] == "Hi"
    assert (errors["b"]["stage"], errors["c"]["stage"], errors["d"]["stage"]) == (
        "request",
        "canceled",
        "missing",
    )
    assert json.loads(errors["c"]["raw"]) == {"custom_id": "c", "result": {"type": "canceled"}}
