"""What every provider's batches share (emulator.batches)."""

from __future__ import annotations

from pathlib import Path

from batch_pipeline.emulator.batches import read_result_lines


def test_result_lines_become_items_and_parse_errors(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n\n{not json\n  \n{"id": "b"}\n[1]\n')
    items, parse_errors = read_result_lines(path, lambda value, index: {"v": value, "i": index})
    assert items == [{"v": {"id": "a"}, "i": 0}, {"v": {"id": "b"}, "i": 4}, {"v": [1], "i": 5}]
    assert [(e["code"], e["line"]) for e in parse_errors] == [("parse_error", 3)]
    assert parse_errors[0]["message"].startswith("failed to parse JSONL line 3: ")
