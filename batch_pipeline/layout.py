"""Where everything lives under the data root (DESIGN.md "Data layout"), and confinement to it.

Every path the pipeline reads or writes is derived here from a partition name, so no input file
name or partition key can reach outside the data root.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

INPUT_SUFFIXES = (".jsonl.gz", ".jsonl")
# A partition name is a file name without its suffix: portable, hive-safe, no path separators.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


class LayoutError(ValueError):
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
        raise LayoutError(f"{file_name}: not an input file (expected .jsonl or .jsonl.gz)")
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
class DataLayout:
    """The data root and the fixed paths below it."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> DataLayout:
        return cls(Path(root).resolve())

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def staging(self, name: str) -> Path:
        return self.root / "staging" / check_name(name)

    def manifest(self, name: str) -> Path:
        return self.root / "batches" / f"{check_name(name)}.json"

    def results_file(self, name: str) -> Path:
        return self.root / "results" / f"input_file={check_name(name)}" / "part-0.parquet"

    def errors_file(self, name: str) -> Path:
        return self.root / "errors" / f"input_file={check_name(name)}" / "part-0.parquet"

    def input_file(self, name: str) -> Path:
        """The inbox file of a partition; refuses a symlink that leads outside the data root."""
        check_name(name)
        for suffix in INPUT_SUFFIXES:
            path = self.inbox / f"{name}{suffix}"
            if path.exists() or path.is_symlink():
                real = path.resolve()
                if not real.is_relative_to(self.root):
                    raise LayoutError(f"{path}: links outside the data root {self.root}")
                if not real.is_file():  # a directory, FIFO or device would fail or block
                    raise LayoutError(f"{path}: not a regular file")
                return path
        raise LayoutError(f"{name}: no {name}.jsonl or {name}.jsonl.gz in {self.inbox}")

    def new_inputs(
        self, known: Collection[str], *, settle_seconds: float, now: float
    ) -> tuple[list[str], list[str]]:
        """Partition names of inbox files not in `known` and unchanged for `settle_seconds`
        (a file still being copied in is left for later), and one-line refusals of bad names."""
        new, refused, seen = [], [], set()
        for path in self.inbox_files():
            try:
                name = partition_name(path.name)
                changed = path.stat().st_mtime
            except LayoutError as exc:
                refused.append(str(exc))
                continue
            except OSError:  # a broken link, or removed since the listing
                refused.append(f"{path.name}: cannot be read")
                continue
            if name in seen:
                refused.append(f"{path.name}: another file is already input {name!r}; rename one")
                continue
            seen.add(name)
            if name not in known and now - changed >= settle_seconds:
                new.append(name)
        return new, refused

    def inbox_files(self) -> Iterator[Path]:
        """Input files in the inbox, sorted by name (others are ignored)."""
        if not self.inbox.is_dir():
            return
        for path in sorted(self.inbox.iterdir()):
            if path.name.endswith(INPUT_SUFFIXES) and not path.name.startswith("."):
                yield path


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Write `path` through a temp file in the same folder, fsync and rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
