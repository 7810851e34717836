import gzip
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.operations.retry import RetryError, attempt_of, write_retry_wave
from batch_pipeline.results import PartitionWriter


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a", ("a", 1)),
        ("a.retry-1", ("a", 2)),
        ("a.retry-12", ("a", 13)),
        ("a.retry-0", ("a.retry-0", 1)),
        ("x.v2", ("x.v2", 1)),
    ],
)
def test_attempt_of(name: str, expected: tuple[str, int]) -> None:
    assert attempt_of(name) == expected


def _collected(
    layout: DataLayout, name: str, errors: list[tuple[int, bool, str]], *, gz: bool = False
) -> None:
    """An input file of 6 lines and an errors table with (input_line, retryable, stage) rows."""
    layout.inbox.mkdir(parents=True, exist_ok=True)
    lines = b"".join(
        b'{"custom_id":"r%d"}\r\n' % i if i == 2 else b'{"custom_id":"r%d"}\n' % i
        for i in range(1, 7)
    )
    if gz:
        (layout.inbox / f"{name}.jsonl.gz").write_bytes(gzip.compress(lines))
    else:
        (layout.inbox / f"{name}.jsonl").write_bytes(lines)
    with PartitionWriter(
        layout.results_file(name), layout.errors_file(name), collected_at=datetime.now(UTC)
    ) as w:
        for line, retryable, stage in errors:
            w.add_error(custom_id=f"r{line}", input_line=line, stage=stage, retryable=retryable)


@pytest.mark.parametrize("gz", [False, True])
def test_retry_wave_holds_exactly_the_retryable_lines(tmp_path: Path, gz: bool) -> None:
    layout = DataLayout.at(tmp_path)
    _collected(
        layout, "a", [(2, True, "expired"), (3, False, "request"), (5, True, "missing")], gz=gz
    )
    wave = write_retry_wave(layout, "a")
    assert wave is not None and wave.created
    assert (wave.name, wave.attempt, wave.requests) == ("a.retry-1", 2, 2)
    assert wave.path.read_bytes() == b'{"custom_id":"r2"}\r\n{"custom_id":"r5"}\n'
    again = write_retry_wave(layout, "a")
    assert again is not None and not again.created and again.path == wave.path


def test_non_retryable_only_when_asked(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    _collected(layout, "a", [(3, False, "request")])
    assert write_retry_wave(layout, "a") is None
    wave = write_retry_wave(layout, "a", include_non_retryable=True)
    assert wave is not None and wave.requests == 1


def test_attempts_are_bounded(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    _collected(layout, "a.retry-2", [(1, True, "expired")])
    with pytest.raises(RetryError, match="attempt 3 of at most 3"):
        write_retry_wave(layout, "a.retry-2", max_attempts=3)
    wave = write_retry_wave(layout, "a.retry-2", max_attempts=4)
    assert wave is not None and wave.name == "a.retry-3"


def test_not_collected_yet(tmp_path: Path) -> None:
    with pytest.raises(RetryError, match="not collected yet"):
        write_retry_wave(DataLayout.at(tmp_path), "a")


def test_a_gzip_file_named_jsonl_is_read_by_its_content(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    _collected(layout, "z", [(4, True, "expired")], gz=True)
    (layout.inbox / "z.jsonl.gz").rename(layout.inbox / "z.jsonl")
    wave = write_retry_wave(layout, "z")
    assert wave is not None and wave.path.read_bytes() == b'{"custom_id":"r4"}\n'


@pytest.mark.parametrize("folder", [False, True])
def test_a_tables_retry_wave_holds_its_rows_and_template(tmp_path: Path, folder: bool) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir(parents=True)
    rows = pa.table({"id": list(range(1, 21)), "part": ["x"] * 10 + ["y"] * 10})
    source = layout.inbox / "t.parquet"
    if folder:  # two hive partitions, read in a stable order
        pq.write_to_dataset(rows, source, partition_cols=["part"])
    else:
        pq.write_table(rows, source, row_group_size=3)
    layout.template_file("t").write_text("model: openai/gpt-4o-mini\n")
    with PartitionWriter(
        layout.results_file("t"), layout.errors_file("t"), collected_at=datetime.now(UTC)
    ) as w:
        for line in (2, 9, 13):
            w.add_error(custom_id=f"k{line}", input_line=line, stage="expired", retryable=True)
    wave = write_retry_wave(layout, "t")
    assert wave is not None and wave.path == layout.inbox / "t.retry-1.parquet"
    written = pq.read_table(wave.path)
    assert written.column("id").to_pylist() == [2, 9, 13]
    assert layout.template_file("t.retry-1").read_text() == "model: openai/gpt-4o-mini\n"
