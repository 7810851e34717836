"""Hostile inputs (issue 7): each gives clear one-line problems, never a traceback, in both modes."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import orjson
import pytest
from inputs_corpus import CASES, jsonl, openai_line

from batch_pipeline.inputs import InputOptions, InputRejected, prepare_input, validate_file
from batch_pipeline.inputs.reader import KEEP_PREFIX_BYTES, LineReader

FIFTY_MB = 50 * 1024 * 1024


def _huge_line(size: int) -> bytes:
    head = b'{"custom_id":"huge","method":"POST","url":"/v1/chat/completions","body":{"model":"openai/m","x":"'
    return head + b"a" * (size - len(head) - 3) + b'"}}'


def test_fifty_megabyte_line_is_refused_without_holding_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as out:
        out.write(jsonl(openai_line("a"), _huge_line(FIFTY_MB), openai_line("b")))
    report = validate_file(path, InputOptions())
    assert [str(p) for p in report.problems] == [
        f"{path}:2: line is 52,428,800 bytes, over the largest per-request limit (10,485,760 bytes)"
    ]
    assert report.summary.largest_lines[0] == (2, FIFTY_MB)
    plan = prepare_input(path, tmp_path / "st", InputOptions(on_invalid="skip"))
    (entry,) = [orjson.loads(line) for line in plan.rejected_path.read_bytes().splitlines()]
    assert entry["input_line"] == 2 and entry["raw_truncated"] is True
    assert len(entry["raw"]) == KEEP_PREFIX_BYTES
    assert plan.summary.requests == 2


def test_huge_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "huge_last.jsonl"
    path.write_bytes(jsonl(openai_line("a")) + _huge_line(12 * 1024 * 1024))
    (problem,) = validate_file(path, InputOptions()).problems
    assert problem.line == 2 and "over the largest per-request limit" in problem.reason


def test_random_binary_garbage_gives_line_problems(tmp_path: Path) -> None:
    rng = random.Random(3)
    garbage = bytes(rng.randrange(1, 256) for _ in range(20_000))
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(garbage)
    report = validate_file(path, InputOptions(max_problems=5))
    assert not report.ok and len(report.problems) == 5
    assert report.total_problems == garbage.count(b"\n") + 1 - _blank_count(garbage)
    assert all(p.line is not None and "\n" not in str(p) for p in report.problems)


def _blank_count(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if not line.strip())


def test_corrupt_gzip_is_one_file_level_problem(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(*(openai_line(f"r{i}") for i in range(2000))))[:300])
    report = validate_file(path, InputOptions())
    assert report.problems[-1].line is None
    assert report.problems[-1].reason.startswith("gzip data is corrupt or truncated")
    with pytest.raises(InputRejected, match="gzip data is corrupt"):
        prepare_input(path, tmp_path / "st", InputOptions(on_invalid="skip"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("on_invalid", ["reject", "skip"])
def test_prepare_never_raises_anything_but_input_rejected(
    case, on_invalid: str, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(case.content)
    options = InputOptions(on_invalid=on_invalid, **case.options)
    try:
        plan = prepare_input(path, tmp_path / "st", options)
    except InputRejected as exc:
        assert "\n" not in str(exc)
        assert exc.report.total_problems == len(case.problems)
        return
    assert plan.rejected_count == len({p.split(":")[0] for p in case.problems})
    assert plan.total_lines == plan.summary.requests + plan.rejected_count


def test_file_names_with_spaces_unicode_and_dots(tmp_path: Path) -> None:
    for name in ("with space.jsonl", "ünïcødé.jsonl", "a..b.jsonl"):
        path = tmp_path / name
        path.write_bytes(jsonl(openai_line("a")))
        assert validate_file(path, InputOptions()).ok


def test_unreadable_bytes_everywhere_never_crash(tmp_path: Path) -> None:
    rng = random.Random(11)
    base = jsonl(openai_line("a"), openai_line("b"))
    for trial in range(200):
        mutated = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        path = tmp_path / f"m{trial}.jsonl"
        path.write_bytes(bytes(mutated))
        report = validate_file(path, InputOptions())
        assert all("\n" not in str(p) for p in report.problems)


def test_lines_after_an_overlong_line_ending_a_chunk_are_read(tmp_path: Path) -> None:
    """An over-cap line whose newline is the last byte of a chunk used to end the read there."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"x" * 127 + b"\n" + b"short1\nshort2\n")
    reader = LineReader(path, max_line_bytes=50, chunk_bytes=64)
    lines = [line for batch in reader.batches() for line in batch]
    assert [len(line) for line in lines] == [127, 6, 6]
    assert lines[1:] == [b"short1", b"short2"]
    assert reader.state.bytes_read == path.stat().st_size
