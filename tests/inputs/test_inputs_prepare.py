"""prepare_input: normalized shards, content addresses, idempotence, reject vs skip, plan.json."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import orjson
import pytest
from inputs_corpus import anthropic_line, jsonl, openai_line

from batch_pipeline.inputs import (
    InputOptions,
    InputPlan,
    InputRejected,
    ShardLimits,
    prepare_input,
    read_shard_index,
)
from batch_pipeline.inputs.shard import GATEWAY_ENVELOPE_MARGIN, effective_limits
from batch_pipeline.providers import GATEWAY_MAX_BODY_BYTES, PROVIDERS


def _write(tmp_path: Path, content: bytes, name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _shard_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _snapshot(staging: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file: unchanged values mean nothing was rewritten."""
    return {
        str(p.relative_to(staging)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in staging.rglob("*")
        if p.is_file()
    }


def test_openai_lines_become_file_mode_shards_with_bare_model(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(openai_line("a"), openai_line("b", model="openai/gpt-4o")))
    plan = prepare_input(path, tmp_path / "staging" / "in", InputOptions())
    assert [(s.provider, s.model, s.endpoint, s.submit_mode) for s in plan.shards] == [
        ("openai", "gpt-4o-mini", "/v1/chat/completions", "file"),
        ("openai", "gpt-4o", "/v1/chat/completions", "file"),
    ]
    first = _shard_lines(plan.shards[0].path)
    assert first == [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        }
    ]
    assert read_shard_index(plan.shards[1]) == {"b": 2}
    assert plan.input_name == "in"
    assert plan.total_lines == 2 and plan.rejected_count == 0 and plan.rejected_path is None


def test_anthropic_lines_become_inline_items_with_bare_model(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(anthropic_line("q1"), anthropic_line("q2")))
    plan = prepare_input(path, tmp_path / "st", InputOptions())
    (shard,) = plan.shards
    assert (shard.provider, shard.model, shard.endpoint, shard.submit_mode) == (
        "anthropic",
        "claude-3-5-haiku",
        "/v1/messages",
        "inline",
    )
    items = _shard_lines(shard.path)
    assert [item["custom_id"] for item in items] == ["q1", "q2"]
    assert set(items[0]) == {"custom_id", "params"}
    assert items[0]["params"]["model"] == "claude-3-5-haiku"


def test_openai_style_line_for_anthropic_becomes_an_inline_item(tmp_path: Path) -> None:
    line = openai_line("m1", model="anthropic/claude", url="/v1/messages")
    plan = prepare_input(_write(tmp_path, jsonl(line)), tmp_path / "st", InputOptions())
    assert _shard_lines(plan.shards[0].path)[0] == {
        "custom_id": "m1",
        "params": {"model": "claude", "messages": [{"role": "user", "content": "hi"}]},
    }


def test_default_provider_applies_to_bare_models(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(openai_line("a", model="gpt-4o-mini")))
    plan = prepare_input(path, tmp_path / "st", InputOptions(default_provider="azure"))
    assert (plan.shards[0].provider, plan.shards[0].model) == ("azure", "gpt-4o-mini")


def test_rerun_is_a_no_op_with_the_same_shard_ids(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(*(openai_line(f"r{i}") for i in range(30))))
    staging = tmp_path / "st"
    options = InputOptions(
        limits={"openai": ShardLimits(max_requests=7, max_bytes=10**6, max_bytes_per_request=10**5)}
    )
    first = prepare_input(path, staging, options)
    before = _snapshot(staging)
    second = prepare_input(path, staging, options)
    assert [s.shard_id for s in second.shards] == [s.shard_id for s in first.shards]
    assert len(first.shards) == 5
    assert _snapshot(staging) == before


def test_rerun_after_plan_loss_rewrites_nothing_but_the_plan(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(openai_line("a"), openai_line("b")))
    staging = tmp_path / "st"
    first = prepare_input(path, staging, InputOptions())
    shard_files = {k: v for k, v in _snapshot(staging).items() if k.startswith("shards/")}
    (staging / "plan.json").unlink()
    second = prepare_input(path, staging, InputOptions())
    assert second.shards == first.shards
    assert {k: v for k, v in _snapshot(staging).items() if k.startswith("shards/")} == shard_files


def test_shard_id_is_a_content_address(tmp_path: Path) -> None:
    a = prepare_input(
        _write(tmp_path, jsonl(openai_line("a")), "a.jsonl"), tmp_path / "a", InputOptions()
    )
    b = prepare_input(
        _write(tmp_path, jsonl(openai_line("a")), "b.jsonl"), tmp_path / "b", InputOptions()
    )
    c = prepare_input(
        _write(tmp_path, jsonl(openai_line("c")), "c.jsonl"), tmp_path / "c", InputOptions()
    )
    assert a.shards[0].shard_id == b.shards[0].shard_id != c.shards[0].shard_id
    assert len(a.shards[0].shard_id) == 20
    assert a.shards[0].path.name == f"{a.shards[0].shard_id}.jsonl"


def test_changed_input_or_options_replan(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(openai_line("a")))
    staging = tmp_path / "st"
    first = prepare_input(path, staging, InputOptions())
    path.write_bytes(jsonl(openai_line("a"), openai_line("b")))
    second = prepare_input(path, staging, InputOptions())
    assert second.input_sha256 != first.input_sha256
    assert second.shards[0].request_count == 2
    third = prepare_input(path, staging, InputOptions(default_provider="openai"))
    assert third.options_fingerprint != second.options_fingerprint


def test_gzip_input_reads_like_plain(tmp_path: Path) -> None:
    content = jsonl(openai_line("a"), openai_line("b"))
    plain = prepare_input(_write(tmp_path, content), tmp_path / "p", InputOptions())
    zipped = prepare_input(
        _write(tmp_path, gzip.compress(content), "in.jsonl.gz"), tmp_path / "z", InputOptions()
    )
    assert [s.shard_id for s in zipped.shards] == [s.shard_id for s in plain.shards]
    assert zipped.input_sha256 == plain.input_sha256


def test_reject_raises_with_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(openai_line("a"), b"[]", openai_line("a"), b"{"))
    staging = tmp_path / "st"
    with pytest.raises(InputRejected) as caught:
        prepare_input(path, staging, InputOptions())
    assert (
        str(caught.value) == f"{path}:2: line is a JSON array, not an object (and 2 more problems)"
    )
    assert [p.line for p in caught.value.report.problems] == [2, 3, 4]
    assert [p for p in staging.rglob("*") if p.is_file()] == []


def test_reject_removes_a_stale_plan(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(openai_line("a")))
    staging = tmp_path / "st"
    prepare_input(path, staging, InputOptions())
    path.write_bytes(b"[]\n")
    with pytest.raises(InputRejected):
        prepare_input(path, staging, InputOptions())
    assert InputPlan.load(staging) is None


def test_skip_records_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    bad_utf8 = b'{"custom_id":"z","x":"caf\xe9"}'
    path = _write(
        tmp_path,
        jsonl(
            openai_line("a"),
            b"",
            b"[1]",
            openai_line("b", method="GET"),
            openai_line("a"),
            bad_utf8,
            openai_line("c"),
        ),
    )
    plan = prepare_input(path, tmp_path / "st", InputOptions(on_invalid="skip"))
    assert plan.rejected_path == tmp_path / "st" / "rejected.jsonl"
    rejected = [orjson.loads(line) for line in plan.rejected_path.read_bytes().splitlines()]
    assert sorted((r["input_line"], r["custom_id"], r["reason"]) for r in rejected) == [
        (3, None, "line is a JSON array, not an object"),
        (4, "b", "method: must be \"POST\", got 'GET'"),
        (5, "a", "custom_id: duplicate 'a', also used on line 1"),
        (6, None, "not valid UTF-8 (byte 0xe9 at byte 26)"),
    ]
    by_line = {r["input_line"]: r["raw"] for r in rejected}
    assert by_line[3] == "[1]"
    assert by_line[5] == openai_line("a").decode()
    assert by_line[6] == '{"custom_id":"z","x":"caf\ufffd"}'
    assert read_shard_index(plan.shards[0]) == {"a": 1, "c": 7}
    assert plan.rejected_count == 4 and plan.total_lines == 6
    assert plan.summary.requests == 2


def test_skip_still_rejects_a_file_level_problem(tmp_path: Path) -> None:
    with pytest.raises(InputRejected, match="no requests"):
        prepare_input(_write(tmp_path, b"\n\n"), tmp_path / "st", InputOptions(on_invalid="skip"))


def test_plan_round_trips_through_plan_json(tmp_path: Path) -> None:
    path = _write(tmp_path, jsonl(openai_line("a"), b"[]"))
    staging = tmp_path / "st"
    plan = prepare_input(path, staging, InputOptions(on_invalid="skip"))
    assert InputPlan.load(staging) == plan
    saved = json.loads((staging / "plan.json").read_text())
    assert saved["shards"][0]["path"].startswith("shards/")  # relative: the data root can move


def test_summary_counts_models_bytes_tokens_and_largest_lines(tmp_path: Path) -> None:
    big = openai_line("big", body={"model": "openai/m2", "messages": [{"content": "x" * 500}]})
    content = jsonl(openai_line("a"), b"", big, openai_line("c"))
    plan = prepare_input(_write(tmp_path, content), tmp_path / "st", InputOptions())
    summary = plan.summary
    assert summary.requests == 3 and summary.lines == 3 and summary.blank_lines == 1
    assert summary.bytes == len(content)
    assert summary.models == ["openai/gpt-4o-mini", "openai/m2"]
    assert summary.providers == ["openai"] and summary.endpoints == ["/v1/chat/completions"]
    assert summary.largest_lines[0] == (3, len(big))
    payload_bytes = sum(s.bytes - s.request_count for s in plan.shards)
    assert summary.estimated_prompt_tokens == payload_bytes // 4
    assert summary.shards == 2


def test_effective_limits_respect_the_gateway_body_cap() -> None:
    limits = effective_limits({})
    cap = GATEWAY_MAX_BODY_BYTES - GATEWAY_ENVELOPE_MARGIN
    assert limits["openai"].max_bytes == cap  # 200 MB published, 100 MB gateway
    assert limits["openai"].max_requests == PROVIDERS["openai"].max_requests_per_batch
    override = effective_limits(
        {"openai": ShardLimits(max_requests=5, max_bytes=100, max_bytes_per_request=500)}
    )
    assert override["openai"] == ShardLimits(
        max_requests=5, max_bytes=100, max_bytes_per_request=99
    )


def test_a_request_over_the_shard_byte_limit_is_a_problem(tmp_path: Path) -> None:
    options = InputOptions(
        limits={"openai": ShardLimits(max_requests=10, max_bytes=120, max_bytes_per_request=10_000)}
    )
    report_path = _write(tmp_path, jsonl(openai_line("a")))
    with pytest.raises(InputRejected, match="over openai's per-request limit of 119 bytes"):
        prepare_input(report_path, tmp_path / "st", options)


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    staging = tmp_path / "st"
    prepare_input(_write(tmp_path, jsonl(openai_line("a"))), staging, InputOptions())
    assert sorted(os.listdir(staging)) == ["plan.json", "shards"]


def test_a_file_concatenated_with_itself_rejects_every_repeat(tmp_path: Path) -> None:
    half = jsonl(*(openai_line(f"r{i}") for i in range(300)))
    path = _write(tmp_path, half + half)
    plan = prepare_input(path, tmp_path / "st", InputOptions(on_invalid="skip"))
    assert plan.rejected_count == 300 and plan.summary.requests == 300
    assert [line for s in plan.shards for line in read_shard_index(s).values()] == list(
        range(1, 301)
    )
    rejected = [orjson.loads(line) for line in plan.rejected_path.read_bytes().splitlines()]
    assert rejected[0]["reason"] == "custom_id: duplicate 'r0', also used on line 1"
    assert rejected[0]["input_line"] == 301


def test_hash_collisions_are_settled_by_exact_custom_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batch_pipeline.inputs import block

    monkeypatch.setattr(block, "hash", lambda _: 42, raising=False)  # every custom_id collides
    path = _write(tmp_path, jsonl(openai_line("a"), openai_line("b"), openai_line("a")))
    plan = prepare_input(path, tmp_path / "st", InputOptions(on_invalid="skip"))
    assert read_shard_index(plan.shards[0]) == {"a": 1, "b": 2}
    assert plan.rejected_count == 1
