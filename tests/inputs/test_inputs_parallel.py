"""Scanning a file on worker processes gives exactly what scanning it in one process gives.

Blocks are made tiny (a few hundred bytes) so that even small files are cut into many blocks:
lines, shard limits, over-long lines and duplicates then straddle block boundaries and workers.
"""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from inputs_corpus import CASES, Case, anthropic_line, jsonl, openai_line

from batch_pipeline.inputs import InputOptions, ShardLimits, prepare_input, read_shard_index
from batch_pipeline.inputs import reader as reader_module
from batch_pipeline.inputs import workers as workers_module
from batch_pipeline.inputs.reader import InputChanged
from batch_pipeline.inputs.scan import BLOCKS_AHEAD_PER_WORKER, FileScan
from batch_pipeline.inputs.shard import ShardDraft, iter_index
from batch_pipeline.inputs.workers import WORKERS_ENV, worker_count

TINY_BLOCKS = 256


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "CHUNK_BYTES", TINY_BLOCKS)


def _scan(path: Path, options: InputOptions, work: Path, workers: int) -> dict[str, Any]:
    """Everything a scan produces, in comparable form; checks the workers really ran."""
    work.mkdir()
    rejected: list[tuple[Any, ...]] = []
    scan = FileScan(path, options, work, lambda *line: rejected.append(line), workers=workers)
    result = scan.run()
    assert scan.workers == workers, "the scan fell back to one process"
    return {
        "problems": [str(p) for p in result.problems],
        "total_problems": result.total_problems,
        "fatal": result.fatal,
        "notes": result.notes,
        "summary": result.summary.model_dump(),
        "rejected": rejected,
        "rejected_lines": result.rejected_lines,
        "total_lines": result.total_lines,
        "sha256": result.read.sha256.hexdigest(),
        "shards": [
            (
                d.shard_id,
                (d.provider, d.model, d.endpoint),
                (d.count, d.bytes, d.first_line, d.last_line),
                d.path.read_bytes() if d.path else None,
                list(iter_index(d.index_path)) if d.index_path else None,
            )
            for d in result.drafts
        ],
        "left_in_work_dir": sorted(
            p.name for p in work.iterdir() if not p.name.startswith("shard-")
        ),
    }


def _same_both_ways(path: Path, options: InputOptions, tmp_path: Path) -> dict[str, Any]:
    alone = _scan(path, options, tmp_path / "alone", workers=0)
    pooled = _scan(path, options, tmp_path / "pooled", workers=2)
    assert pooled == alone
    assert alone["left_in_work_dir"] == []  # spill files are gone once written into shards
    return alone


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("on_invalid", ["reject", "skip"])
def test_every_corpus_file_scans_the_same_on_workers(
    case: Case, on_invalid: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{case.name}.jsonl"
    path.write_bytes(case.content)
    options = InputOptions(**{"on_invalid": on_invalid, **case.options})
    _same_both_ways(path, options, tmp_path)


def _mixed_file(lines: int = 400) -> bytes:
    """Valid requests for three models, bad lines, blank and CRLF lines, duplicates far apart,
    more unknown top-level keys than the notes list, lines over a request limit and over every
    limit, and an unterminated bad last line."""
    out = []
    for n in range(1, lines + 1):
        model = ("openai/gpt-4o-mini", "openai/gpt-4o", "azure/gpt-4o")[n % 3]
        if n % 37 == 0:
            out.append(b"{not json")
        elif n % 41 == 0:
            out.append(b"")
        elif n % 43 == 0:
            out.append(openai_line(f"r{n - 200}", model))  # repeats an earlier custom_id
        elif n % 7 == 0:
            out.append(openai_line(f"r{n}", model, **{f"extra_{n}": 1}))
        elif n == 150:
            out.append(openai_line("huge", model, note="x" * 3000))  # over every limit
        elif n == 200:
            message = {"role": "user", "content": "y" * 1000}
            out.append(openai_line("big", body={"model": "azure/gpt-4o", "messages": [message]}))
        else:
            line = openai_line(f"r{n}", model)
            out.append(line + b"\r" if n % 53 == 0 else line)
    return jsonl(*out) + b'{"custom_id": "cut'


SMALL = ShardLimits(max_requests=50, max_bytes=10_000, max_bytes_per_request=1_500)
MIXED_OPTIONS = {
    "on_invalid": "skip",
    "max_problems": 1000,
    "limits": {
        "openai": ShardLimits(max_requests=7, max_bytes=2_000, max_bytes_per_request=1_500),
        "azure": ShardLimits(max_requests=50, max_bytes=1_000, max_bytes_per_request=900),
        "anthropic": SMALL,
        "gemini": SMALL,
        "bedrock": SMALL,
        "vertex": SMALL,
    },
}


def test_a_mixed_file_scans_the_same_on_workers(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_mixed_file())
    result = _same_both_ways(path, InputOptions(**MIXED_OPTIONS), tmp_path)
    reasons = " ".join(result["problems"])
    for reason in (
        "duplicate 'r",
        "line is 3,",  # over the largest per-request limit: never held whole
        "over azure's per-request limit of 900 bytes",
        "truncated: the last line ends inside its JSON value",
    ):
        assert reason in reasons
    assert len(result["shards"]) > 20  # shard limits cut the blocks' runs many times
    (unknown,) = [n for n in result["notes"] if n.startswith("top-level fields not sent")]
    assert unknown.count("lines)") == 20


def test_a_gzip_file_scans_the_same_on_workers(tmp_path: Path) -> None:
    """Decompressed blocks go to the workers as bytes (a gzip file has no byte ranges)."""
    path = tmp_path / "mixed.jsonl.gz"
    path.write_bytes(gzip.compress(_mixed_file()))
    _same_both_ways(path, InputOptions(**MIXED_OPTIONS), tmp_path)


def test_the_endpoint_set_late_holds_for_every_worker(tmp_path: Path) -> None:
    """Blocks wait for the one before until a line sets the file's endpoint; after that, a line
    for another endpoint is a problem wherever it is scanned."""
    head = [b'{"custom_id":"x%d"}' % n for n in range(30)]  # no url: no endpoint yet
    tail = [
        openai_line(f"o{n}", "openai/gpt-4o") if n % 9 == 5 else anthropic_line(f"q{n}")
        for n in range(200)
    ]
    path = tmp_path / "late.jsonl"
    path.write_bytes(jsonl(*head, *tail))
    result = _same_both_ways(path, InputOptions(on_invalid="skip", max_problems=500), tmp_path)
    assert any("differs from the file's endpoint /v1/messages" in p for p in result["problems"])


def test_lines_keep_their_key_order_wherever_they_are_scanned(tmp_path: Path) -> None:
    """A line that already is the request is written as it came, also when it is a model's first
    line in a worker (whose first line takes the full check, not the short path)."""
    lines = [
        json.dumps(json.loads(openai_line(f"r{n}")), sort_keys=True, separators=(",", ":"))
        for n in range(300)
    ]
    path = tmp_path / "sorted.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = _same_both_ways(path, InputOptions(), tmp_path)
    (shard,) = result["shards"]
    written = shard[3].splitlines()
    assert written[0] == lines[0].replace("openai/gpt-4o-mini", "gpt-4o-mini").encode()
    assert all(line.startswith(b'{"body":') for line in written)


def test_spill_files_do_not_pile_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group with few requests per block must not keep every block's spill file on disk: the
    disk used stays a few blocks' worth, whatever the file's size."""
    monkeypatch.setattr(reader_module, "CHUNK_BYTES", 16 * 1024)
    lines = []
    for n in range(1, 6001):
        if n % 100 == 0:
            lines.append(b"[]")  # a bad line: on_reject looks at the work dir during the scan
        else:
            model = "azure/gpt-4o" if n % 50 == 0 else "openai/gpt-4o-mini"
            lines.append(openai_line(f"r{n}", model))
    path = tmp_path / "rare.jsonl"
    path.write_bytes(jsonl(*lines))
    work = tmp_path / "work"
    work.mkdir()
    seen: list[int] = []
    scan = FileScan(
        path,
        InputOptions(on_invalid="skip"),
        work,
        lambda *_: seen.append(len(list(work.glob("block-*")))),
        workers=2,
    )
    scan.run()
    assert scan.workers == 2
    blocks = path.stat().st_size // (16 * 1024)
    assert len(seen) == 60 and blocks > 40
    # Blocks scanned ahead of the merge have their files; nothing else stays on disk.
    assert max(seen) <= BLOCKS_AHEAD_PER_WORKER * 2 + 2
    assert not list(work.glob("block-*"))


def test_validation_alone_scans_the_same_on_workers(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_mixed_file())
    options = InputOptions(**MIXED_OPTIONS)
    alone = FileScan(path, options, workers=0).run()
    pooled = FileScan(path, options, workers=2).run()
    assert [str(p) for p in pooled.problems] == [str(p) for p in alone.problems]
    assert pooled.summary == alone.summary
    assert [(d.shard_id, d.count) for d in pooled.drafts] == [
        (d.shard_id, d.count) for d in alone.drafts
    ]


def test_workers_started_through_a_fork_server_scan_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A threaded process (a Dagster run worker) starts workers through a fork server."""
    monkeypatch.setattr(workers_module, "_single_threaded", lambda: False)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_mixed_file())
    _same_both_ways(path, InputOptions(**MIXED_OPTIONS), tmp_path)


def test_a_process_that_cannot_start_workers_scans_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", refuse)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_mixed_file())
    work = tmp_path / "work"
    work.mkdir()
    scan = FileScan(path, InputOptions(**MIXED_OPTIONS), work, workers=2)
    fell_back = scan.run()
    assert scan.workers == 0
    assert "scanning in one process" in caplog.text
    alone = _scan(path, InputOptions(**MIXED_OPTIONS), tmp_path / "alone", workers=0)
    assert [d.shard_id for d in fell_back.drafts] == [shard[0] for shard in alone["shards"]]


def test_a_file_changed_while_workers_read_it_is_refused(tmp_path: Path) -> None:
    """Workers read blocks from the file itself, so a file rewritten meanwhile could mix two
    versions: the scan fails rather than publish such shards."""
    path = tmp_path / "growing.jsonl"
    path.write_bytes(jsonl(*(openai_line(f"r{n}") if n != 5 else b"[]" for n in range(300))))

    def append(*_: object) -> None:
        with path.open("ab") as out:
            out.write(jsonl(openai_line("late")))

    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InputChanged, match="changed while it was read"):
        FileScan(path, InputOptions(on_invalid="skip"), work, append, workers=2).run()


def test_prepare_input_on_workers_makes_the_same_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_mixed_file())
    options = InputOptions(**MIXED_OPTIONS)
    monkeypatch.setenv(WORKERS_ENV, "0")
    alone = prepare_input(path, tmp_path / "alone" / "mixed", options)
    monkeypatch.setenv(WORKERS_ENV, "2")
    pooled = prepare_input(path, tmp_path / "pooled" / "mixed", options)
    assert pooled.to_json(tmp_path / "pooled" / "mixed") == alone.to_json(
        tmp_path / "alone" / "mixed"
    )
    for ours, theirs in zip(pooled.shards, alone.shards, strict=True):
        assert ours.path.read_bytes() == theirs.path.read_bytes()
        assert read_shard_index(ours) == read_shard_index(theirs)
    assert pooled.rejected_path is not None and alone.rejected_path is not None
    assert pooled.rejected_path.read_bytes() == alone.rejected_path.read_bytes()
    staged = {p.name for p in (tmp_path / "pooled" / "mixed").rglob("*") if p.is_file()}
    assert not any(name.startswith("block-") for name in staged)


def test_a_failed_write_stops_the_writer_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails the scan, and no thread keeps writing into the work dir afterwards."""

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ShardDraft, "write_unit", disk_full)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_mixed_file())
    work = tmp_path / "work"
    work.mkdir()
    before = set(threading.enumerate())
    with pytest.raises(OSError, match="No space left"):
        FileScan(path, InputOptions(**MIXED_OPTIONS), work, workers=2).run()
    assert [t.name for t in threading.enumerate() if t not in before] == []


@pytest.mark.parametrize(
    ("configured", "size", "expected"),
    [
        (None, 1_000, 0),  # small files: one process
        ("0", 10**12, 0),
        ("1", 10**12, 0),
        ("3", 1_000, 3),  # a set number applies to every file
    ],
)
def test_worker_count(
    configured: str | None, size: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if configured is None:
        monkeypatch.delenv(WORKERS_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKERS_ENV, configured)
    assert worker_count(size) == expected


def test_worker_count_for_large_files_follows_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.setattr(workers_module, "_usable_cpus", lambda: 4)
    assert worker_count(workers_module.PARALLEL_MIN_BYTES) == 4
    monkeypatch.setattr(workers_module, "_usable_cpus", lambda: 64)
    assert worker_count(workers_module.PARALLEL_MIN_BYTES) == workers_module.MAX_WORKERS
    monkeypatch.setattr(workers_module, "_usable_cpus", lambda: 1)
    assert worker_count(workers_module.PARALLEL_MIN_BYTES) == 0


def test_a_bad_worker_count_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "two")
    with pytest.raises(ValueError, match=f"^{WORKERS_ENV} must be a whole number, got 'two'$"):
        worker_count(10**9)


def test_mixed_file_is_what_it_claims() -> None:
    """The generator really makes the hard cases the tests above rely on."""
    lines = _mixed_file().split(b"\n")
    assert lines[-1] == b'{"custom_id": "cut'
    assert any(len(line) > TINY_BLOCKS * 4 for line in lines)
    ids = [json.loads(line)["custom_id"] for line in lines[:-1] if line.startswith(b'{"c')]
    assert len(ids) != len(set(ids))
    assert orjson.loads(lines[0])["body"]["model"] == "openai/gpt-4o"
