"""Bad input corpus: malformed and hostile input files, each refused with one clear line naming
the file and the line, by `batch-pipeline validate`, by the batch_input asset and by `run`; the
inbox sensor survives all of them, and nothing reaches the gateway."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData
from driver_support import driver, submit
from inputs_corpus import CASES, jsonl, openai_line
from reliability_support import counters

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.ledger.layout import partition_name

CLI = Path(sys.executable).with_name("batch-pipeline")
FIFTY_MB = 50 * 1024 * 1024


@dataclass(frozen=True)
class BadFile:
    """One hostile file: its name in the inbox, its bytes, and its first problem as
    `LINE: reason` (or `reason` for the whole file), or None where only the form is known."""

    file_name: str
    content: bytes
    first_problem: str | None

    @property
    def partition(self) -> str:
        return self.file_name.removesuffix(".gz").removesuffix(".jsonl")


def _fifty_mb_line() -> bytes:
    head = b'{"custom_id":"huge","method":"POST","url":"/v1/chat/completions","body":{"x":"'
    return head + b"a" * (FIFTY_MB - len(head) - 3) + b'"}}'


def _corpus() -> list[BadFile]:
    from_inputs = [
        BadFile(f"{case.name}.jsonl", case.content, case.problems[0])
        for case in CASES
        if case.problems and not case.options
    ]
    garbage = bytes(random.Random(7).randrange(1, 256) for _ in range(20_000))
    cut_gzip = gzip.compress(jsonl(*(openai_line(f"r{i}") for i in range(2000))))[:300]
    return [
        *from_inputs,
        BadFile(
            "fifty_mb_line.jsonl",
            jsonl(openai_line("a"), _fifty_mb_line()),
            "2: line is 52,428,800 bytes, over the largest per-request limit (10,485,760 bytes)",
        ),
        BadFile("random_garbage.jsonl", garbage, None),
        BadFile("truncated_gzip.jsonl.gz", cut_gzip, None),
        BadFile(
            "custom_id_object.jsonl",
            jsonl(openai_line({"id": 1})),
            "1: custom_id: must be a string, got object",
        ),
        BadFile(
            "pretty_printed.jsonl", json.dumps(json.loads(openai_line()), indent=2).encode(), None
        ),
        BadFile("whole_file_array.jsonl", b"[\n" + openai_line() + b"\n]\n", None),
        BadFile("negative_huge.jsonl", jsonl(b'{"custom_id":"a","n":-1e400}'), None),
    ]


CORPUS = _corpus()
# File names the pipeline refuses whatever they hold (valid content inside).
BAD_NAMES = ["with space.jsonl", "ünïcødé.jsonl", "a..b.jsonl", "-dash.jsonl", "x" * 201 + ".jsonl"]


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 30
    assert len({f.partition for f in CORPUS}) == len(CORPUS)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    for bad in CORPUS:
        (directory / bad.file_name).write_bytes(bad.content)
    return directory


def _assert_names_file_and_line(text: str, path: Path, bad: BadFile) -> None:
    """`text` is one line that starts with the file, then the line where one applies."""
    assert "\n" not in text.strip() and "Traceback" not in text, text
    first = bad.first_problem
    if first is not None:
        expected = f"{path}:{first}" if first[0].isdigit() else f"{path}: {first}"
        assert text.startswith(expected), (text, expected)
    else:
        assert text.startswith(f"{path}:"), text
        where = text[len(str(path)) + 1 :].split(":")[0].strip()
        assert where.isdigit() or "gzip" in text, text


@pytest.mark.slow
def test_validate_gives_one_line_per_problem_and_exit_1(corpus_dir: Path) -> None:
    """`batch-pipeline validate FILE`, one process per file, all at once."""
    runs = {
        bad: subprocess.Popen(
            [str(CLI), "validate", str(corpus_dir / bad.file_name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for bad in CORPUS
    }
    for bad, process in runs.items():
        out, err = process.communicate(timeout=120)
        path = corpus_dir / bad.file_name
        assert process.returncode == 1, (bad.file_name, out, err)
        assert "Traceback" not in out + err and err == "", (bad.file_name, err)
        lines = out.splitlines()
        assert all(line.startswith(f"{path}:") for line in lines), out
        problems = [line for line in lines if not line.startswith(f"{path}: INVALID")]
        _assert_names_file_and_line(problems[0], path, bad)
        assert lines[-1].startswith(f"{path}: INVALID"), out


@pytest.mark.slow
def test_batch_input_fails_with_one_line_naming_file_and_line_and_submits_nothing(
    emulator, instance, data_root: Path, corpus_dir: Path
) -> None:
    drive = driver(instance, emulator.base_url, data_root)
    wrong = []
    for bad in CORPUS:
        path = data_root / "inbox" / bad.file_name
        path.write_bytes((corpus_dir / bad.file_name).read_bytes())
        message = submit(drive, bad.partition)
        try:
            assert message is not None, "accepted"
            _assert_names_file_and_line(message, path, bad)
            assert not (data_root / "staging" / bad.partition / "plan.json").exists()
        except AssertionError as exc:
            wrong.append(f"{bad.file_name}: {exc}")
        path.unlink()  # keep the inbox small: 50 MB files add up
    assert wrong == []
    seen = counters(emulator.base_url)
    assert (seen["files_uploaded"], seen["batches_created"]) == (0, 0)
    assert not (data_root / "batches").exists() or not list((data_root / "batches").glob("*.json"))


@pytest.mark.parametrize("file_name", BAD_NAMES)
def test_refused_names_through_the_asset(emulator, instance, data_root, file_name) -> None:
    (data_root / "inbox" / file_name).write_bytes(jsonl(openai_line()))
    partition = file_name.removesuffix(".jsonl")
    message = submit(driver(instance, emulator.base_url, data_root), partition)
    assert message is not None and "\n" not in message and "rename the file" in message, message
    assert counters(emulator.base_url)["batches_created"] == 0


@pytest.mark.parametrize(
    ("file_name", "key"),
    [
        ("with space.jsonl", "with_space"),
        ("ünïcødé.jsonl", "unicode"),
        ("a..b.jsonl", "a.b"),
        ("-dash.jsonl", "dash"),
    ],
)
def test_ordinary_names_through_run_get_safe_keys(
    emulator, instance, data_root, tmp_path, file_name, key
) -> None:
    """A name a user has is processed under its safe key; the UI keeps the name it came under."""
    source = tmp_path / file_name
    source.write_bytes(jsonl(openai_line()))
    drive = driver(instance, emulator.base_url, data_root)
    summary = drive.run([source])
    assert summary.ok and [f.name for f in summary.files] == [key]
    assert (data_root / "results" / f"input_file={key}" / "part-0.parquet").exists()
    (event,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=drive.names.batch_input, asset_partitions=[key]), limit=1
    ).records
    metadata = event.asset_materialization.metadata
    assert metadata["original_file"].value == file_name


def test_run_refuses_a_hidden_name(emulator, instance, data_root, tmp_path) -> None:
    source = tmp_path / ".hidden.jsonl"
    source.write_bytes(jsonl(openai_line()))
    with pytest.raises(BatchPipelineError) as info:
        driver(instance, emulator.base_url, data_root).run([source])
    assert "\n" not in str(info.value) and "rename the file" in str(info.value)
    assert counters(emulator.base_url)["files_uploaded"] == 0


def test_run_command_refuses_a_bad_name_in_one_line(emulator, data_root, tmp_path) -> None:
    source = tmp_path / ".with space.jsonl"
    source.write_bytes(jsonl(openai_line()))
    done = subprocess.run(
        [
            str(CLI),
            "run",
            str(source),
            "--gateway",
            emulator.base_url,
            "--data-dir",
            str(data_root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("batch-pipeline run:")]
    assert "rename the file" in line


@pytest.mark.parametrize("file_name", [".hidden.jsonl", ".with space.jsonl"])
def test_validate_reports_a_name_the_pipeline_refuses(tmp_path: Path, file_name: str) -> None:
    path = tmp_path / file_name
    path.write_bytes(jsonl(openai_line()))
    done = subprocess.run([str(CLI), "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert any("rename the file" in line for line in done.stdout.splitlines()), done.stdout


def _inbox_sensor_tick(drive) -> SensorExecutionData:
    """The inbox sensor's answer, from where its previous tick left it (nothing is done)."""
    return drive.evaluate(drive.names.inbox_sensor)


def test_inbox_sensor_survives_the_corpus_and_warns_about_unfinished_files(
    instance, data_root: Path, corpus_dir: Path
) -> None:
    inbox = data_root / "inbox"
    for bad in CORPUS:
        shutil.copy(corpus_dir / bad.file_name, inbox / bad.file_name)  # content checks come later
    for name in BAD_NAMES:
        (inbox / name).write_bytes(jsonl(openai_line()))
    (inbox / ".partial.jsonl").write_bytes(b"{")  # hidden: a copy in progress, left alone
    drive = driver(instance, "http://127.0.0.1:9", data_root)
    answer = _inbox_sensor_tick(drive)
    requested = sorted(r.partition_key for r in answer.run_requests)
    # names are registered whatever their content (batch_input refuses bad content), under
    # their safe keys; a JSONL file ending inside a line waits for the rest, and says so
    unfinished = [b for b in CORPUS if b.file_name.endswith(".jsonl") and b.content[-1:] != b"\n"]
    taken = [b.partition for b in CORPUS if b not in unfinished]
    assert unfinished and requested == sorted(taken + [partition_name(n) for n in BAD_NAMES])
    warned = json.loads(answer.cursor)["told"]
    assert sorted(warned) == sorted(
        f"{b.file_name}: ends inside a line ({len(b.content)} bytes so far), so it is not "
        f"taken yet; if it is complete, create {b.file_name}.done beside it"
        for b in unfinished
    )
    again = _inbox_sensor_tick(drive)
    assert json.loads(again.cursor)["told"] == warned  # refused names are told once, not every tick
