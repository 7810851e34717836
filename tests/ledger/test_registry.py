"""The input registry on a local folder and on an s3:// bucket: a content-addressed copy per
registered input, new content under a used name and known content under a new name refused in
one line, and an inbox file that grew or changed after it was taken reported."""

from __future__ import annotations

import hashlib
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.registry import InputRefused, InputRegistry, fingerprint, version_of
from batch_pipeline.ledger.storage import DataPath, data_root

LINES = b'{"a": 1}\n{"a": 2}\n'


@pytest.fixture(params=["local", "s3"])
def layout(request, tmp_path: Path) -> DataLayout:
    if request.param == "local":
        return DataLayout(data_root(tmp_path / "data"))
    bucket = request.getfixturevalue("s3_bucket")
    return DataLayout(data_root(bucket.url()))


def _drop(layout: DataLayout, file_name: str, content: bytes) -> DataPath:
    path = layout.inbox / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_registered_input_is_a_content_addressed_copy_that_outlives_the_inbox_file(
    layout: DataLayout,
) -> None:
    registry = InputRegistry(layout)
    record = registry.register("tix", _drop(layout, "tix.jsonl", LINES))
    sha = hashlib.sha256(LINES).hexdigest()
    assert (record.sha256, record.size, record.file, record.version) == (
        sha,
        len(LINES),
        "tix.jsonl",
        1,
    )
    copy = registry.source("tix")
    assert str(copy).endswith(f"inputs/{sha}/tix.jsonl") and copy.read_bytes() == LINES
    _drop(layout, "tix.jsonl", b'{"other": 1}\n')  # overwritten in the inbox afterwards
    assert registry.source("tix").read_bytes() == LINES
    assert registry.record("tix") == record
    assert registry.first_with(sha) == record


def test_the_same_content_under_the_same_name_is_a_no_op(layout: DataLayout) -> None:
    registry = InputRegistry(layout)
    first = registry.register("tix", _drop(layout, "tix.jsonl", LINES))
    again = registry.register("tix", _drop(layout, "tix.jsonl", LINES))
    assert again == first


def test_new_content_under_a_used_name_is_refused_in_one_line(layout: DataLayout) -> None:
    registry = InputRegistry(layout)
    first = registry.register("tix", _drop(layout, "tix.jsonl", LINES))
    with pytest.raises(InputRefused) as info:
        registry.register("tix", _drop(layout, "tix.jsonl", LINES + b'{"a": 3}\n'))
    message = str(info.value)
    assert "\n" not in message
    assert "tix.jsonl: new content under the used name 'tix'" in message
    assert f"the original is kept in inputs/{first.sha256}/tix.jsonl" in message
    assert registry.record("tix") == first and registry.source("tix").read_bytes() == LINES


def test_known_content_under_a_new_name_points_to_the_earlier_results(
    layout: DataLayout,
) -> None:
    registry = InputRegistry(layout)
    registry.register("tix", _drop(layout, "tix.jsonl", LINES))
    copy = _drop(layout, "tix_copy.jsonl", LINES)
    with pytest.raises(InputRefused) as info:
        registry.register("tix_copy", copy)
    message = str(info.value)
    assert "\n" not in message
    assert "tix_copy.jsonl: same content as tix.jsonl (input 'tix'" in message
    assert "its results are in results/input_file=tix" in message
    assert registry.record("tix_copy") is None
    resubmitted = registry.register("tix_copy", copy, allow_duplicate=True)
    assert resubmitted.sha256 == registry.record("tix").sha256  # type: ignore[union-attr]
    assert registry.first_with(resubmitted.sha256).key == "tix"  # type: ignore[union-attr]


def test_of_two_names_registering_the_same_content_at_once_one_is_refused(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both names pass the look-up before either is recorded (a barrier holds them there):
    the content index decides, so the content is registered, and paid for, once."""
    registry = InputRegistry(layout)
    paths = {key: _drop(layout, f"{key}.jsonl", LINES) for key in ("left", "right")}
    both_checked = threading.Barrier(2, timeout=10)
    check_new = InputRegistry.check_new

    def in_step(self: InputRegistry, *args: Any, **kwargs: Any) -> Any:
        answer = check_new(self, *args, **kwargs)
        both_checked.wait()
        return answer

    monkeypatch.setattr(InputRegistry, "check_new", in_step)
    with ThreadPoolExecutor(2) as pool:
        futures = {key: pool.submit(registry.register, key, path) for key, path in paths.items()}
    refused = {key: f.exception() for key, f in futures.items() if f.exception() is not None}
    assert len(refused) == 1, refused
    [(loser, error)] = refused.items()
    [winner] = set(paths) - {loser}
    assert isinstance(error, InputRefused) and "\n" not in str(error)
    message = str(error)  # names the winner, registered by now or still being registered
    assert message.startswith(f"{loser}.jsonl: same content as ") and repr(winner) in message
    assert registry.record(loser) is None
    sha = hashlib.sha256(LINES).hexdigest()
    assert registry.first_with(sha).key == winner  # type: ignore[union-attr]
    copies = sorted(p.name for p in (layout.root / "inputs" / sha).iterdir())
    assert copies == [f"{winner}.jsonl"]  # the refused name left no copy behind


def test_a_registration_cut_after_its_claim_is_taken_up_by_its_own_name_only(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = InputRegistry(layout)
    path = _drop(layout, "tix.jsonl", LINES)

    def cut(*args: Any) -> None:
        raise OSError("the run was killed")

    monkeypatch.setattr("batch_pipeline.ledger.registry._publish_copy", cut)
    with pytest.raises(OSError, match="killed"):
        registry.register("tix", path)
    monkeypatch.undo()
    assert registry.record("tix") is None  # claimed, not recorded
    with pytest.raises(InputRefused) as info:
        registry.register("tix_copy", _drop(layout, "tix_copy.jsonl", LINES))
    assert str(info.value).startswith(
        "tix_copy.jsonl: same content as input 'tix', which is being registered; to pay for it "
        "again, resubmit"
    )
    assert registry.register("tix", path).key == "tix"  # its own run again: taken up
    assert registry.register("tix_copy", layout.inbox / "tix_copy.jsonl", allow_duplicate=True)


def test_a_claim_still_being_written_refuses_another_name(layout: DataLayout) -> None:
    """Where the file system has no hard links, a claim is created empty, then written."""
    registry = InputRegistry(layout)
    index = registry.index_path(hashlib.sha256(LINES).hexdigest())
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(b"")
    with pytest.raises(InputRefused) as info:
        registry.register("tix", _drop(layout, "tix.jsonl", LINES))
    assert str(info.value).startswith(
        "tix.jsonl: same content as another input, which is being registered; to pay for it "
        "again, resubmit"
    )
    assert registry.record("tix") is None and registry.first_with(index.stem) is None


def test_a_name_mapped_onto_a_registered_key_is_refused(layout: DataLayout) -> None:
    registry = InputRegistry(layout)
    registry.register("q3_tickets", _drop(layout, "Q3 tickets.jsonl", LINES))
    with pytest.raises(
        InputRefused,
        match=re.escape(
            "q3_tickets.jsonl: maps to input key 'q3_tickets', which Q3 tickets.jsonl already "
            "holds; rename the file"
        ),
    ):
        registry.register("q3_tickets", _drop(layout, "q3_tickets.jsonl", b'{"b": 1}\n'))


def test_an_inbox_file_that_grew_or_changed_after_it_was_taken_is_reported(
    layout: DataLayout,
) -> None:
    registry = InputRegistry(layout)
    registry.register("tix", _drop(layout, "tix.jsonl", LINES))
    assert registry.drift("tix") is None
    _drop(layout, "tix.jsonl", LINES + b'{"a": 3}\n')
    grew = registry.drift("tix")
    assert grew is not None and "\n" not in grew
    assert grew.startswith(
        f"tix.jsonl grew after it was taken ({len(LINES)} -> {len(LINES) + 9} bytes)"
    )
    _drop(layout, "tix.jsonl", LINES.replace(b"1", b"7"))
    changed = registry.drift("tix")
    assert changed is not None and changed.startswith("tix.jsonl changed after it was taken")
    (layout.inbox / "tix.jsonl").unlink()
    assert registry.drift("tix") is None  # gone from the inbox: the copy is what counts


def test_a_rejected_file_moves_aside_with_its_reason(layout: DataLayout) -> None:
    registry = InputRegistry(layout)
    _drop(layout, "tix.jsonl", LINES)
    target = registry.reject("tix.jsonl", "tix.jsonl: new content under the used name 'tix'")
    assert not (layout.inbox / "tix.jsonl").exists()
    assert target.read_bytes() == LINES
    reason = layout.inbox / "rejected" / "tix.jsonl.reason.txt"
    assert reason.read_text() == "tix.jsonl: new content under the used name 'tix'\n"


def test_a_table_folder_is_copied_whole_and_hashed_by_its_files(layout: DataLayout) -> None:
    registry = InputRegistry(layout)
    folder = layout.inbox / "rows.parquet"
    (folder / "part=1").mkdir(parents=True, exist_ok=True)
    (folder / "part=1" / "a.parquet").write_bytes(b"PAR1 one PAR1")
    (folder / "b.parquet").write_bytes(b"PAR1 two PAR1")
    record = registry.register("rows", folder)
    copy = registry.source("rows")
    assert (copy / "part=1" / "a.parquet").read_bytes() == b"PAR1 one PAR1"
    assert (copy / "b.parquet").read_bytes() == b"PAR1 two PAR1"
    assert fingerprint(copy).sha256 == record.sha256 == fingerprint(folder).sha256
    (folder / "b.parquet").write_bytes(b"PAR1 changed PAR1")
    assert fingerprint(folder).sha256 != record.sha256


def test_versions_of_a_name() -> None:
    assert version_of("tix") == ("tix", 1)
    assert version_of("tix.v2") == ("tix", 2)
    assert version_of("tix.v12") == ("tix", 12)
    assert version_of("tix.v1") == ("tix.v1", 1)
    assert version_of("eval.v0") == ("eval.v0", 1)
