import os
from pathlib import Path

import pytest

from batch_pipeline.ledger.layout import DataLayout, LayoutError, check_name, partition_name
from batch_pipeline.ledger.storage import atomic_write


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("reviews.jsonl", "reviews"),
        ("reviews.jsonl.gz", "reviews"),
        ("eval_2026-11.v2.jsonl", "eval_2026-11.v2"),
        ("a.retry-1.jsonl", "a.retry-1"),
    ],
)
def test_partition_name_of_good_files(file_name: str, expected: str) -> None:
    assert partition_name(file_name) == expected


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("Q3 tickets.jsonl", "q3_tickets"),
        ("café.jsonl", "cafe"),
        ("a=b.jsonl", "a_b"),
        ("ünïcode.jsonl", "unicode"),
        ("a..b.jsonl", "a.b"),
        ("Mixed Case (final).jsonl.gz", "mixed_case_final"),
        ("  spaced  .parquet", "spaced"),
        ("line\nbreak.jsonl", "line_break"),
    ],
)
def test_any_file_name_maps_to_a_safe_stable_key(file_name: str, expected: str) -> None:
    assert partition_name(file_name) == expected
    assert partition_name(file_name) == expected  # stable: the same name, the same key
    assert check_name(expected) == expected


def test_names_with_nothing_usable_or_too_long_get_a_hashed_key() -> None:
    empty = partition_name("日本語.jsonl")
    assert empty.startswith("input_") and empty == partition_name("日本語.jsonl")
    assert empty != partition_name("中文.jsonl")
    long = partition_name("X" * 300 + ".jsonl")
    assert len(long) <= 200 and check_name(long) == long
    assert long != partition_name("X" * 301 + ".jsonl")


@pytest.mark.parametrize(
    "file_name",
    [
        "../escape.jsonl",
        "/etc/passwd.jsonl",
        "sub/dir.jsonl",
        "back\\slash.jsonl",
        "..jsonl",
        ".hidden.jsonl",
        "notes.txt",
        "x.jsonl.part",
    ],
)
def test_partition_name_refuses_paths_hidden_names_and_non_inputs(file_name: str) -> None:
    with pytest.raises(LayoutError) as info:
        partition_name(file_name)
    assert "\n" not in str(info.value)


def test_input_file_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}\n")
    layout = DataLayout.at(tmp_path / "data")
    layout.inbox.mkdir(parents=True)
    (layout.inbox / "evil.jsonl").symlink_to(outside)
    with pytest.raises(LayoutError, match="outside the data root"):
        layout.input_file("evil")


def test_input_file_accepts_symlink_within_root(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir(parents=True)
    (tmp_path / "real.jsonl").write_text("{}\n")
    (layout.inbox / "ok.jsonl").symlink_to(tmp_path / "real.jsonl")
    assert layout.input_file("ok").name == "ok.jsonl"


def test_paths_stay_under_root(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    for path in (
        layout.staging("a"),
        layout.manifest("a"),
        layout.results_file("a"),
        layout.errors_file("a"),
    ):
        assert path.resolve().is_relative_to(tmp_path.resolve())
    with pytest.raises(LayoutError):
        layout.staging("../../etc")


def test_new_inputs_waits_for_settled_files_and_reports_bad_names(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir()
    for name in ("old.jsonl", "fresh.jsonl", "known.jsonl", "Known .jsonl", "readme.txt"):
        (layout.inbox / name).write_text("{}\n")
    os.utime(layout.inbox / "old.jsonl", (1, 1))
    new, refused = layout.new_inputs(
        {"known"}, settle_seconds=5, now=(layout.inbox / "fresh.jsonl").stat().st_mtime + 1
    )
    assert new == ["old"]
    assert refused == [
        "Known .jsonl: known.jsonl is already input 'known' (both names map to that key); "
        "rename one"
    ]


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_new_inputs_reports_broken_links_and_clashing_names(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir()
    (layout.inbox / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (layout.inbox / "twin.jsonl").write_text("{}\n")
    (layout.inbox / "twin.jsonl.gz").write_bytes(b"")
    new, refused = layout.new_inputs(set(), settle_seconds=0, now=2e9)
    assert new == ["twin"]
    assert any("gone.jsonl: cannot be read" in r for r in refused)
    assert any("already input 'twin'" in r for r in refused)


def _scan(layout: DataLayout, ready: str, settle: float = 5.0, known: frozenset[str] = frozenset()):
    return layout.scan_inbox(known, settle_seconds=settle, now=2e9, ready=ready)  # type: ignore[arg-type]


def test_quiet_files_are_taken_only_when_their_last_line_is_whole(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir()
    (layout.inbox / "whole.jsonl").write_bytes(b'{"a": 1}\n')
    (layout.inbox / "half.jsonl").write_bytes(b'{"a": 1}\n{"a"')
    (layout.inbox / "table.parquet").write_bytes(b"PAR1....")  # footer not written yet
    page = _scan(layout, "quiet")
    assert page.new == ["whole"] and page.files == {"whole": "whole.jsonl"}
    assert page.refused == [
        "half.jsonl: ends inside a line (13 bytes so far), so it is not taken yet; if it is "
        "complete, create half.jsonl.done beside it",
        "table.parquet: has no Parquet footer (8 bytes so far), so it is not taken yet; if it "
        "is complete, create table.parquet.done beside it",
    ]
    (layout.inbox / "half.jsonl.done").touch()  # its producer says it is complete
    assert sorted(_scan(layout, "quiet").new) == ["half", "whole"]
    os.utime(layout.inbox / "whole.jsonl")  # just changed: inside the quiet period
    assert (
        "whole"
        not in layout.scan_inbox(
            set(), settle_seconds=5, now=(layout.inbox / "whole.jsonl").stat().st_mtime + 1
        ).new
    )


def test_marker_mode_waits_for_the_marker_and_renamed_mode_takes_at_once(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir()
    (layout.inbox / "a.jsonl").write_bytes(b'{"a": 1}\n')
    (layout.inbox / "b.jsonl").write_bytes(b'{"a": 1}')  # no final newline: complete all the same
    assert _scan(layout, "marker").new == []
    (layout.inbox / "b.jsonl.done").touch()
    assert _scan(layout, "marker").new == ["b"]
    assert _scan(layout, "renamed", settle=1e12).new == ["a", "b"]


@pytest.mark.parametrize("ready", ["quiet", "renamed", "marker"])
def test_temporary_names_are_never_taken(tmp_path: Path, ready: str) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir()
    for name in (".tix.jsonl", "tix.jsonl.tmp", "tix.jsonl.part", ".tix.jsonl.done"):
        (layout.inbox / name).write_bytes(b'{"a": 1}\n')
    (layout.inbox / "tix.jsonl.part.done").touch()
    page = _scan(layout, ready)
    assert (page.new, page.refused) == ([], [])


def test_known_names_are_listed_for_a_second_look(tmp_path: Path) -> None:
    layout = DataLayout.at(tmp_path)
    layout.inbox.mkdir()
    (layout.inbox / "Q3 tickets.jsonl").write_bytes(b'{"a": 1}\n')
    page = _scan(layout, "quiet", known=frozenset({"q3_tickets"}))
    assert page.new == [] and [(e.key, e.file) for e in page.known] == [
        ("q3_tickets", "Q3 tickets.jsonl")
    ]
    assert layout.input_file("q3_tickets") == layout.inbox / "Q3 tickets.jsonl"
    (layout.inbox / "q3  tickets.jsonl").write_bytes(b'{"a": 1}\n')
    with pytest.raises(LayoutError, match="all map to this input key; rename all but one"):
        layout.input_file("q3_tickets")
