"""Where everything lives under the data root (DESIGN.md "Data layout"), and confinement to it.

Every path the pipeline reads or writes is derived here from a partition name, so no input file
name or partition key can reach outside the data root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.ledger.storage import DataPath, data_root, is_local, list_names

TABLE_SUFFIX = ".parquet"  # a Parquet file, or a folder of them (hive partitions allowed)
INPUT_SUFFIXES = (".jsonl.gz", ".jsonl", TABLE_SUFFIX)
TEMPLATE_SUFFIX = ".template.yaml"  # beside a table in the inbox: the template its rows take
# A partition name is a file name without its suffix: portable, hive-safe, no path separators.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


class LayoutError(BatchPipelineError, ValueError):
    """A file or partition name the pipeline refuses, with a one-line reason."""


def partition_name(file_name: str) -> str:
    """The partition key for an inbox file name (`reviews.jsonl` -> `reviews`), or LayoutError."""
    base = os.path.basename(file_name)
    if base != file_name:
        raise LayoutError(f"{file_name}: an input is named by its file name, not a path")
    for suffix in INPUT_SUFFIXES:
        if base.endswith(suffix):
            stem = base[: -len(suffix)]
            break
    else:
        raise LayoutError(
            f"{file_name}: not an input (expected .jsonl, .jsonl.gz, or a .parquet file or folder)"
        )
    check_name(stem)
    return stem


def check_name(name: str) -> str:
    """Return `name` when it is a safe partition name, else raise LayoutError saying why."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise LayoutError(
            f"{name!r}: input names may use letters, digits, '_', '-' and single '.', "
            "start with a letter or digit, and be at most 200 characters; rename the file"
        )
    return name


@dataclass(frozen=True)
class InboxScan:
    """One page of the inbox: new partition names, one-line refusals, and where the next page
    starts (None when this page reached the end: the next scan starts over)."""

    new: list[str]
    refused: list[str]
    next_after: str | None


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
        """The inbox input of a partition (a file, or a table's folder); refuses a symlink that
        leads outside the data root."""
        check_name(name)
        for suffix in INPUT_SUFFIXES:
            path = self.inbox / f"{name}{suffix}"
            if not is_local(path):
                if path.exists():
                    return path
                continue
            if path.exists() or path.is_symlink():
                self._check_local_input(path)
                return path
        raise LayoutError(
            f"{name}: no {name}.jsonl, {name}.jsonl.gz or {name}.parquet in {self.inbox}"
        )

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
        self, known: Collection[str], *, settle_seconds: float, now: float
    ) -> tuple[list[str], list[str]]:
        """Partition names of every inbox file not in `known` and settled, and refusals."""
        new: list[str] = []
        refused: list[str] = []
        after = None
        while True:
            page = self.scan_inbox(
                known, settle_seconds=settle_seconds, now=now, after=after, limit=1000
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
    ) -> InboxScan:
        """One page of inbox files (names sorting after `after`, at most `limit`): partition
        names not in `known` and unchanged for `settle_seconds` (a file still being copied in
        is left for later), and one-line refusals of bad names and links."""
        entries = list_names(self.inbox, after=after, limit=limit, folders=True)
        new, refused, seen = [], [], set()
        for file_name, changed in entries:
            if not file_name.endswith(INPUT_SUFFIXES) or file_name.startswith("."):
                continue
            if changed is None:  # a broken link, or removed since the listing
                refused.append(f"{file_name}: cannot be read")
                continue
            try:
                name = partition_name(file_name)
                if is_local(self.inbox):
                    self._check_local_input(self.inbox / file_name)
            except LayoutError as exc:
                refused.append(str(exc))
                continue
            if name in seen:
                refused.append(f"{file_name}: another file is already input {name!r}; rename one")
                continue
            seen.add(name)
            if name not in known and now - _settled_at(self.inbox / file_name, changed) >= (
                settle_seconds
            ):
                new.append(name)
        full_page = limit is not None and len(entries) >= limit
        return InboxScan(new, refused, entries[-1][0] if full_page else None)

    def inbox_files(self) -> Iterator[DataPath]:
        """Inputs in the inbox (files and table folders), sorted by name (others are ignored)."""
        for file_name, _ in list_names(self.inbox, folders=True):
            if file_name.endswith(INPUT_SUFFIXES) and not file_name.startswith("."):
                yield self.inbox / file_name


def is_table(path: DataPath) -> bool:
    """Whether an input is a table (a .parquet file or folder) rather than JSONL."""
    return path.name.endswith(TABLE_SUFFIX)


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
