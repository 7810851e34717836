"""Where everything lives under the data root (DESIGN.md "Data layout"), and confinement to it.

Every path the pipeline reads or writes is derived here from a partition name, so no input file
name or partition key can reach outside the data root.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.ledger.storage import DataPath, data_root, is_local, list_names

TABLE_SUFFIX = ".parquet"  # a Parquet file, or a folder of them (hive partitions allowed)
INPUT_SUFFIXES = (".jsonl.gz", ".jsonl", TABLE_SUFFIX)
TEMPLATE_SUFFIX = ".template.yaml"  # beside a table in the inbox: the template its rows take
DONE_SUFFIX = ".done"  # `<file>.done` beside an inbox file: its producer says it is complete
TEMPORARY_SUFFIXES = (".tmp", ".part")  # a producer's name while writing: never taken
# A partition name is portable, hive-safe, without path separators; `partition_key` maps any
# file name to one.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
MAX_NAME = 200
# Letters NFKD does not take apart into an ASCII letter and an accent.
_LETTERS = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ß": "ss",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "TH",
        "\u0131": "i",  # dotless i
    }
)
Readiness = Literal["quiet", "renamed", "marker"]


class LayoutError(BatchPipelineError, ValueError):
    """A file or partition name the pipeline refuses, with a one-line reason."""


def partition_name(file_name: str) -> str:
    """The partition key for an inbox file name (`reviews.jsonl` -> `reviews`, `Q3 tickets.jsonl`
    -> `q3_tickets`; see `partition_key`), or LayoutError for a path, a hidden or temporary
    name, or a file that is not an input."""
    base = os.path.basename(file_name)
    if base != file_name or "/" in file_name or "\\" in file_name:
        raise LayoutError(f"{file_name!r}: an input is named by its file name, not a path")
    if is_temporary(base):
        raise LayoutError(
            f"{file_name!r}: a hidden or temporary name is never taken; rename the file"
        )
    stem = input_stem(base)
    if stem is None:
        raise LayoutError(
            f"{file_name}: not an input (expected .jsonl, .jsonl.gz, or a .parquet file or folder)"
        )
    return partition_key(stem)


def input_stem(file_name: str) -> str | None:
    """A file name without its input suffix, or None when it is not an input."""
    for suffix in INPUT_SUFFIXES:
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return None


def is_temporary(file_name: str) -> bool:
    """A name a producer writes under before renaming (`.x`, `x.tmp`, `x.part`): never taken."""
    return file_name.startswith(".") or file_name.endswith(TEMPORARY_SUFFIXES)


def partition_key(stem: str) -> str:
    """The stable partition key of a file name's stem. A safe name is its own key; any other is
    folded to ASCII (accents dropped), lower-cased, each run of other characters made one `_`,
    runs of `.` made one, trimmed to a letter or digit at both ends, and cut to 200 characters
    with a hash of the whole name (`Q3 tickets` -> `q3_tickets`, `café` -> `cafe`, `a=b` ->
    `a_b`); a name with nothing left becomes `input_<hash>`."""
    if _NAME_RE.fullmatch(stem) and ".." not in stem:
        return stem
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    folded = unicodedata.normalize("NFKD", stem.translate(_LETTERS))
    folded = folded.encode("ascii", "ignore").decode().lower()
    key = re.sub(r"\.{2,}", ".", re.sub(r"[^a-z0-9_.-]+", "_", folded)).strip("_.-")
    if len(key) > MAX_NAME:
        key = key[: MAX_NAME - 9].rstrip("_.-") + "_" + digest
    return check_name(key or f"input_{digest}")


def check_name(name: str) -> str:
    """Return `name` when it is a safe partition name, else raise LayoutError saying why."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise LayoutError(
            f"{name!r}: input names may use letters, digits, '_', '-' and single '.', "
            "start with a letter or digit, and be at most 200 characters; rename the file"
        )
    return name


@dataclass(frozen=True)
class InboxEntry:
    """An input in the inbox: its partition key, its file name, and when it last changed."""

    key: str
    file: str
    changed: float


@dataclass(frozen=True)
class InboxScan:
    """One page of the inbox: new inputs complete enough to take, inputs whose key is already
    known (to check for new content), one-line refusals, and where the next page starts (None
    when this page reached the end: the next scan starts over)."""

    new: list[str]
    refused: list[str]
    next_after: str | None
    files: dict[str, str] = field(default_factory=dict)  # key of a new input -> its file name
    known: list[InboxEntry] = field(default_factory=list)


@dataclass(frozen=True)
class DataLayout:
    """The data root (a local folder or an s3:// URL) and the fixed paths below it."""

    root: DataPath

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> DataLayout:
        return cls(data_root(root))

    @property
    def inbox(self) -> DataPath:
        return self.root / "inbox"

    def staging(self, name: str) -> DataPath:
        return self.root / "staging" / check_name(name)

    def manifest(self, name: str) -> DataPath:
        return self.root / "batches" / f"{check_name(name)}.json"

    def results_file(self, name: str) -> DataPath:
        return self.root / "results" / f"input_file={check_name(name)}" / "part-0.parquet"

    def errors_file(self, name: str) -> DataPath:
        return self.root / "errors" / f"input_file={check_name(name)}" / "part-0.parquet"

    def input_file(self, name: str) -> DataPath:
        """The inbox input of a partition key (a file, or a table's folder): `<key><suffix>`, else
        the one file whose name maps to the key; refuses two such files, and a symlink that
        leads outside the data root."""
        check_name(name)
        for suffix in INPUT_SUFFIXES:
            path = self.inbox / f"{name}{suffix}"
            if self._usable(path):
                return path
        mapped = [
            file_name
            for file_name, _ in list_names(self.inbox, folders=True)
            if not is_temporary(file_name)
            and input_stem(file_name) is not None
            and _key_or_none(file_name) == name
        ]
        if len(mapped) > 1:
            raise LayoutError(
                f"{name}: {', '.join(mapped)} all map to this input key; rename all but one"
            )
        if mapped and self._usable(self.inbox / mapped[0]):
            return self.inbox / mapped[0]
        raise LayoutError(
            f"{name}: no {name}.jsonl, {name}.jsonl.gz or {name}.parquet in {self.inbox}"
        )

    def _usable(self, path: DataPath) -> bool:
        """Whether an inbox entry exists (checked to stay inside the data root on disk)."""
        if not is_local(path):
            return bool(path.exists())
        if path.exists() or path.is_symlink():
            self._check_local_input(path)
            return True
        return False

    def template_file(self, name: str) -> DataPath:
        """Where a table's own template sits in the inbox (it wins over the instance's)."""
        return self.inbox / f"{check_name(name)}{TEMPLATE_SUFFIX}"

    def _check_local_input(self, path: Path) -> None:
        real = path.resolve()
        if not real.is_relative_to(str(self.root)):
            raise LayoutError(f"{path}: links outside the data root {self.root}")
        # a directory (but a table's), FIFO or device would fail or block
        if not (real.is_file() or (is_table(path) and real.is_dir())):
            raise LayoutError(f"{path}: not a regular file")

    def new_inputs(
        self,
        known: Collection[str],
        *,
        settle_seconds: float,
        now: float,
        ready: Readiness = "quiet",
    ) -> tuple[list[str], list[str]]:
        """Partition names of every inbox file not in `known` and complete, and refusals."""
        new: list[str] = []
        refused: list[str] = []
        after = None
        while True:
            page = self.scan_inbox(
                known, settle_seconds=settle_seconds, now=now, after=after, limit=1000, ready=ready
            )
            new += page.new
            refused += page.refused
            if page.next_after is None:
                return new, refused
            after = page.next_after

    def scan_inbox(
        self,
        known: Collection[str],
        *,
        settle_seconds: float,
        now: float,
        after: str | None = None,
        limit: int | None = None,
        ready: Readiness = "quiet",
    ) -> InboxScan:
        """One page of inbox files (names sorting after `after`, at most `limit`): partition
        names not in `known` whose producer is done with them (`is_complete`), the entries of
        known keys, and one-line refusals of bad names, links and names clashing on one key.
        Hidden and temporary names (`.x`, `x.tmp`, `x.part`) are never looked at."""
        entries = list_names(self.inbox, after=after, limit=limit, folders=True)
        page = InboxScan([], [], entries[-1][0] if limit and len(entries) >= limit else None)
        seen: dict[str, str] = {}
        # a name that is its own key keeps it against a name mapped onto it (`Tix .jsonl`)
        for file_name, changed in sorted(entries, key=lambda e: not _own_key(e[0])):
            if is_temporary(file_name) or input_stem(file_name) is None:
                continue
            if changed is None:  # a broken link, or removed since the listing
                page.refused.append(f"{file_name}: cannot be read")
                continue
            try:
                name = partition_name(file_name)
                if is_local(self.inbox):
                    self._check_local_input(self.inbox / file_name)
            except LayoutError as exc:
                page.refused.append(str(exc))
                continue
            if name in seen:
                page.refused.append(
                    f"{file_name}: {seen[name]} is already input {name!r} (both names map to "
                    "that key); rename one"
                )
                continue
            seen[name] = file_name
            if name in known:
                page.known.append(InboxEntry(name, file_name, changed))
            else:
                complete, note = self.is_complete(
                    file_name, changed, ready=ready, settle_seconds=settle_seconds, now=now
                )
                if complete:
                    page.new.append(name)
                    page.files[name] = file_name
                elif note:
                    page.refused.append(note)
        return page

    def is_complete(
        self,
        file_name: str,
        changed: float,
        *,
        ready: Readiness,
        settle_seconds: float,
        now: float,
    ) -> tuple[bool, str | None]:
        """Whether an inbox file's producer is done with it, and a note when a quiet file is
        still not taken. `renamed`: it was renamed into place whole, so any file under its
        final name is. `marker`: once `<file>.done` exists. `quiet` (the default): once
        `<file>.done` exists, or the file has been unchanged for `settle_seconds` and does not
        end inside a line (a JSONL file ends with a newline, a Parquet file with its footer)."""
        path = self.inbox / file_name
        if ready == "renamed":
            return True, None
        if (self.inbox / f"{file_name}{DONE_SUFFIX}").exists():
            return True, None
        if ready == "marker" or now - _settled_at(path, changed) < settle_seconds:
            return False, None
        if ends_whole(path):
            return True, None
        what = "ends inside a line" if file_name.endswith(".jsonl") else "has no Parquet footer"
        return False, (
            f"{file_name}: {what} ({_size(path)} bytes so far), so it is not taken yet; if it "
            f"is complete, create {file_name}{DONE_SUFFIX} beside it"
        )

    def inbox_files(self) -> Iterator[DataPath]:
        """Inputs in the inbox (files and table folders), sorted by name (others are ignored)."""
        for file_name, _ in list_names(self.inbox, folders=True):
            if input_stem(file_name) is not None and not is_temporary(file_name):
                yield self.inbox / file_name


def is_table(path: DataPath) -> bool:
    """Whether an input is a table (a .parquet file or folder) rather than JSONL."""
    return path.name.endswith(TABLE_SUFFIX)


def _own_key(file_name: str) -> bool:
    """Whether a file name is its key plus a suffix (no mapping was needed)."""
    stem = input_stem(file_name)
    return stem is not None and _key_or_none(file_name) == stem


def _key_or_none(file_name: str) -> str | None:
    try:
        return partition_name(file_name)
    except LayoutError:
        return None


def ends_whole(path: DataPath) -> bool:
    """Whether a file ends where a complete one does: a JSONL file with a newline (its last
    line is whole), a Parquet file with its footer magic; a gzip stream or a table folder is
    checked when it is read."""
    if path.name.endswith(".jsonl"):
        return _tail(path, 1) == b"\n"
    if path.name.endswith(TABLE_SUFFIX) and not path.is_dir():
        return _tail(path, 4) == b"PAR1"
    return True


def _size(path: DataPath) -> int:
    return path.stat().st_size if is_local(path) else int(path.fs.size(path.path))


def _tail(path: DataPath, size: int) -> bytes:
    """The last `size` bytes of a file on disk or S3 (b"" when shorter or gone)."""
    try:
        if is_local(path):
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() < size:
                    return b""
                handle.seek(-size, os.SEEK_END)
                return handle.read(size)
        total = path.fs.size(path.path)
        return b"" if total < size else bytes(path.fs.cat_file(path.path, start=total - size))
    except (FileNotFoundError, IsADirectoryError):
        return b""


def _settled_at(path: DataPath, changed: float) -> float:
    """When an inbox entry last changed: a local table folder by its newest file (copying one
    in touches those), anything else by its own time."""
    if not (is_local(path) and path.is_dir()):
        return changed
    newest = changed
    for folder, _, files in os.walk(path):
        for file_name in files:
            try:
                newest = max(newest, os.stat(os.path.join(folder, file_name)).st_mtime)
            except OSError:
                continue
    return newest
