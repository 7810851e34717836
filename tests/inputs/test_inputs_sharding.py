"""Property tests: shards never exceed a limit, lose or duplicate a line, or reorder lines."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inputs_corpus import anthropic_line, jsonl, openai_line

from batch_pipeline.inputs import InputOptions, ShardLimits, prepare_input, read_shard_index

MODELS = ("openai/m1", "openai/m2", "azure/m1")

lines_strategy = st.lists(
    st.tuples(
        st.sampled_from(MODELS),
        st.text(alphabet="abcdefghij éü", max_size=300),
        st.sampled_from(["ok", "ok", "ok", "ok", "ok", "blank", "bad", "dup"]),
    ),
    min_size=1,
    max_size=80,
)
limits_strategy = st.builds(
    ShardLimits,
    max_requests=st.integers(1, 12),
    max_bytes=st.integers(400, 3000),
    max_bytes_per_request=st.integers(350, 3000),
)


def _build(spec: list[tuple[str, str, str]]) -> tuple[bytes, set[int]]:
    """File bytes and the 1-based numbers of the non-blank lines."""
    lines: list[bytes] = []
    non_blank: set[int] = set()
    for n, (model, text, kind) in enumerate(spec, start=1):
        if kind == "blank":
            lines.append(b"")
            continue
        non_blank.add(n)
        if kind == "bad":
            lines.append(b'{"custom_id": 1}')
        else:
            custom_id = "dup" if kind == "dup" else f"id-{n}"
            body = {"model": model, "messages": [{"role": "user", "content": text}]}
            lines.append(openai_line(custom_id, body=body))
    return jsonl(*lines), non_blank


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=lines_strategy, openai=limits_strategy, azure=limits_strategy)
def test_shards_respect_limits_and_account_for_every_line(
    spec: list[tuple[str, str, str]], openai: ShardLimits, azure: ShardLimits
) -> None:
    content, non_blank = _build(spec)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(content)
        options = InputOptions(on_invalid="skip", limits={"openai": openai, "azure": azure})
        try:
            plan = prepare_input(path, Path(tmp) / "st", options)
        except Exception as exc:  # only a file-level rejection is acceptable: all lines bad
            assert "InputRejected" in type(exc).__name__
            return
        limits = {"openai": openai, "azure": azure}
        seen: list[int] = []
        for shard in plan.shards:
            data = shard.path.read_bytes()
            lim = limits[shard.provider]
            max_bytes = min(lim.max_bytes, 100 * 1024 * 1024)
            assert len(data) == shard.bytes <= max_bytes
            assert shard.request_count <= lim.max_requests
            items = [json.loads(line) for line in data.splitlines()]
            assert len(items) == shard.request_count
            assert all(len(line) <= lim.max_bytes_per_request for line in data.splitlines())
            assert {i["body"]["model"] for i in items} == {shard.model}
            index = read_shard_index(shard)
            assert list(index) == [i["custom_id"] for i in items]
            lines = list(index.values())
            assert lines == sorted(lines), "input order is kept within a shard"
            assert (lines[0], lines[-1]) == (shard.first_line, shard.last_line)
            seen.extend(lines)
        if plan.rejected_path is not None:
            for entry in plan.rejected_path.read_bytes().splitlines():
                seen.append(json.loads(entry)["input_line"])
        assert sorted(seen) == sorted(non_blank), "every non-blank line exactly once"
        assert plan.total_lines == len(non_blank)


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 60), max_requests=st.integers(1, 9))
def test_anthropic_shards_split_by_count_and_keep_order(count: int, max_requests: int) -> None:
    content = jsonl(*(anthropic_line(f"q{n}") for n in range(count)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(content)
        limits = ShardLimits(
            max_requests=max_requests, max_bytes=10**6, max_bytes_per_request=10**5
        )
        plan = prepare_input(path, Path(tmp) / "st", InputOptions(limits={"anthropic": limits}))
        assert [s.request_count for s in plan.shards] == [
            min(max_requests, count - start) for start in range(0, count, max_requests)
        ]
        order = [line for s in plan.shards for line in read_shard_index(s).values()]
        assert order == list(range(1, count + 1))
