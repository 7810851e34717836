"""Every corpus file gives exactly its expected problems (line, field, reason) and notes."""

from __future__ import annotations

from pathlib import Path

import pytest
from inputs_corpus import CASES, Case

from batch_pipeline.inputs import InputOptions, validate_file


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_file_reports_exact_problems(case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"{case.name}.jsonl"
    path.write_bytes(case.content)
    report = validate_file(path, InputOptions(**case.options))
    assert [str(p).removeprefix(f"{path}:").lstrip() for p in report.problems] == case.problems
    assert report.total_problems == len(case.problems)
    assert report.ok is (not case.problems)
    for note in case.notes:
        assert note in report.notes


def test_problem_str_has_file_line_field_reason(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_bytes(b'{"custom_id":"","method":"POST"}\n[]\n')
    first, *_ = validate_file(path, InputOptions()).problems
    assert str(first) == f"{path}:1: custom_id: empty"
    assert first.line == 1 and first.field == "custom_id" and first.reason == "empty"


def test_max_problems_caps_the_list_but_counts_all(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"[]\n" * 120)
    report = validate_file(path, InputOptions(max_problems=7))
    assert [p.line for p in report.problems] == [1, 2, 3, 4, 5, 6, 7]
    assert report.total_problems == 120


def test_duplicates_found_late_still_appear_in_line_order(tmp_path: Path) -> None:
    from inputs_corpus import jsonl, openai_line

    path = tmp_path / "dups.jsonl"
    path.write_bytes(jsonl(openai_line("a"), openai_line("a"), b"[]", b"[]"))
    report = validate_file(path, InputOptions(max_problems=2))
    assert [p.line for p in report.problems] == [2, 3]
    assert report.total_problems == 3
