"""Registered inputs: every partition's input kept as an immutable, content-addressed copy.

`batch_input` registers a partition's inbox file once: it is copied (and hashed on the way) to
`<root>/inputs/<sha256>/<file name>`, and `<root>/inputs/registry/<key>.json` records the file name
it came under, its size and hash, its version and the key it succeeds (lineage). The first key
to register a content claims `<root>/inputs/by_sha256/<sha256>.json` (created only if absent, so
of two keys racing with the same content one is refused), and the same content under another
name is recognised before anything is uploaded. Validation, retry waves and audits
read the copy: whatever later happens to the inbox file changes nothing already registered.
The record is written last, so a copy interrupted half-way is never read.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pydantic import BaseModel
from upath import UPath

from batch_pipeline.ledger.layout import (
    DataLayout,
    LayoutError,
    check_name,
)
from batch_pipeline.ledger.storage import (
    DataPath,
    atomic_write,
    create_once,
    is_local,
    list_names,
    publish,
    read_versioned,
    scratch_for,
    write_versioned,
)

CHUNK = 1 << 20
_VERSION_RE = re.compile(r"(?P<base>.+)\.v(?P<n>[2-9]|[1-9][0-9]+)")


class InputRefused(LayoutError):
    """An input the registry will not take: new content under a used name, content already
    registered under another name, or a name whose key another file holds. One line."""


class InputRecord(BaseModel):
    """What a partition key registered: which inbox file, which content, which version."""

    key: str
    file: str  # the name it arrived under (shown in the UI)
    sha256: str
    size: int
    inbox_changed: float | None = None  # the inbox file's time when it was taken
    registered_at: float
    version: int = 1
    previous: str | None = None  # the key of the version this one replaced

    @property
    def copy_name(self) -> str:
        """Where its copy sits under `inputs/`: the content's hash, then the name it came
        under (so validation's `FILE:LINE:` still names the user's file)."""
        return f"{self.sha256}/{self.file}"


@dataclass(frozen=True)
class Fingerprint:
    """Size and sha256 of a file's bytes (a table folder: of its files, by relative path)."""

    size: int
    sha256: str


def version_of(key: str) -> tuple[str, int]:
    """(base key, version) of a partition key: `tix` -> (tix, 1), `tix.v2` -> (tix, 2)."""
    match = _VERSION_RE.fullmatch(key)
    return (key, 1) if match is None else (match["base"], int(match["n"]))


class InputRegistry:
    """The registered inputs under one data root (DESIGN.md data layout, `inputs/`)."""

    def __init__(self, layout: DataLayout) -> None:
        self.layout = layout
        self.dir = layout.root / "inputs"

    def record_path(self, key: str) -> DataPath:
        return self.dir / "registry" / f"{check_name(key)}.json"

    def index_path(self, sha256: str) -> DataPath:
        return self.dir / "by_sha256" / f"{_hex(sha256)}.json"

    def copy_path(self, record: InputRecord) -> DataPath:
        return self.dir / record.copy_name

    def record(self, key: str) -> InputRecord | None:
        data, _ = read_versioned(self.record_path(key))
        return None if data is None else InputRecord.model_validate_json(data)

    def first_with(self, sha256: str) -> InputRecord | None:
        """The record of the first key that registered this content, if any."""
        data, _ = read_versioned(self.index_path(sha256))
        return self.record(data.decode()) if data else None  # empty: its claim is being written

    def latest(self, key: str, known: set[str]) -> str:
        """The newest registered version among `known` of a file's base key."""
        base, _ = version_of(key)
        version = 2
        while f"{base}.v{version}" in known:
            version += 1
        return base if version == 2 else f"{base}.v{version - 1}"

    def source(self, key: str) -> DataPath:
        """What validation, retry waves and audits read for a partition: its registered copy,
        else (not registered yet) its inbox file."""
        record = self.record(key)
        return self.layout.input_file(key) if record is None else self.copy_path(record)

    def check_new(
        self, key: str, file_name: str, fingerprint: Fingerprint, *, allow_duplicate: bool
    ) -> InputRecord | None:
        """Decide about content `fingerprint` arriving as `file_name` for `key`, before anything
        is copied: the record when it is already registered with that content (nothing to do),
        None when it may be registered, InputRefused (one line) when it must not."""
        record = self.record(key)
        if record is not None:
            if record.file != file_name:
                raise InputRefused(
                    f"{file_name}: maps to input key {key!r}, which {record.file} already holds; "
                    "rename the file"
                )
            if record.sha256 == fingerprint.sha256:
                return record
            raise InputRefused(
                f"{file_name}: new content under the used name {key!r} (registered "
                f"{_when(record.registered_at)}, sha256 {record.sha256[:12]}); the original is "
                f"kept in {self.relative(self.copy_path(record))}; put the new content under a "
                "new file name"
            )
        earlier = self.first_with(fingerprint.sha256)
        if earlier is not None and earlier.key != key and not allow_duplicate:
            raise self._same_content(file_name, earlier.key)
        return None

    def _same_content(self, file_name: str, earlier_key: str | None) -> InputRefused:
        """The refusal of content that `earlier_key` registered first, or is registering (None:
        another input whose claim is still being written)."""
        earlier = None if earlier_key is None else self.record(earlier_key)
        if earlier is None:
            other = "another input" if earlier_key is None else f"input {earlier_key!r}"
            return InputRefused(
                f"{file_name}: same content as {other}, which is being registered; to pay for "
                "it again, resubmit (inputs.on_duplicate: resubmit, or run --resubmit)"
            )
        return InputRefused(
            f"{file_name}: same content as {earlier.file} (input {earlier.key!r}, registered "
            f"{_when(earlier.registered_at)}); its results are in "
            f"{self.relative(self.layout.results_file(earlier.key).parent)}; to pay for it "
            "again, resubmit (inputs.on_duplicate: resubmit, or run --resubmit)"
        )

    def _claim(self, key: str, file_name: str, sha256: str, *, allow_duplicate: bool) -> None:
        """Name `key` the first holder of this content, atomically, before it is recorded: of
        two names registering the same content at once, one holds it and the other is refused
        (unless resubmitting), so a race cannot pay for the same content twice."""
        index = self.index_path(sha256)
        if create_once(index, key.encode()):
            return
        holder, _ = read_versioned(index)
        if allow_duplicate or holder is None or holder.decode() == key:
            return
        raise self._same_content(file_name, holder.decode() or None)

    def register(
        self,
        key: str,
        source: DataPath,
        *,
        allow_duplicate: bool = False,
        version: int = 1,
        previous: str | None = None,
    ) -> InputRecord:
        """Register `source` (an inbox file or table folder) as `key`: copied once under its
        content address, then recorded; the record when it was registered already with this
        content; InputRefused when `check_new` refuses it."""
        changed = _changed_at(source)
        with scratch_for(self.dir / "x") as scratch:
            copy, fingerprint = _hashed_copy(source, scratch)
            try:
                existing = self.check_new(
                    key, source.name, fingerprint, allow_duplicate=allow_duplicate
                )
                if existing is not None:
                    return existing
                record = InputRecord(
                    key=key,
                    file=source.name,
                    sha256=fingerprint.sha256,
                    size=fingerprint.size,
                    inbox_changed=changed,
                    registered_at=time.time(),
                    version=version,
                    previous=previous,
                )
                self._claim(key, source.name, record.sha256, allow_duplicate=allow_duplicate)
                target = self.copy_path(record)
                if copy.is_dir() or not target.exists():  # a folder may be half-copied
                    _publish_copy(copy, target)
            finally:
                _remove(copy)
        _, tag = read_versioned(self.record_path(key))
        write_versioned(self.record_path(key), record.model_dump_json(indent=1).encode(), tag)
        return record

    def new_content(self, record: InputRecord) -> Fingerprint | None:
        """The fingerprint of the inbox file a record was taken from when it now holds other
        content; None when it is gone or the same. On local disk it is not read again while
        its size and (nanosecond) time are those it was taken with; an object's time has one
        second steps, so an object is always read."""
        path = self.layout.inbox / record.file
        changed = _changed_at(path)
        if changed is None:
            return None
        unchanged = changed == record.inbox_changed and _size(path) == record.size
        if unchanged and is_local(path):
            return None
        now = fingerprint(path)
        return None if now.sha256 == record.sha256 else now

    def drift(self, key: str) -> str | None:
        """One line when the inbox file a partition was taken from grew or changed since (None:
        unchanged, gone, or never registered): what collect's blocking check reports."""
        record = self.record(key)
        if record is None:
            return None
        base, version = version_of(key)
        if self.record_path(f"{base}.v{version + 1}").exists():
            return None  # the inbox file went on to be the name's next version
        path = self.layout.inbox / record.file
        changed = _changed_at(path)
        if changed is None:
            return None
        size = _size(path)
        if size != record.size:
            grew = size > record.size
            return (
                f"{record.file} {'grew' if grew else 'shrank'} after it was taken ({record.size} "
                f"-> {size} bytes): only the {record.size} bytes taken were submitted"
                + ("; put the rest under a new file name" if grew else "")
            )
        now = self.new_content(record)
        if now is not None:
            return (
                f"{record.file} changed after it was taken (sha256 {record.sha256[:12]} -> "
                f"{now.sha256[:12]}): the content taken was submitted; put the new content "
                "under a new file name"
            )
        return None

    def reject(self, file_name: str, reason: str) -> DataPath:
        """Move an inbox file to `inbox/rejected/` with `<file>.reason.txt` beside it (the reason
        first, so a moved file always has one); an earlier rejected file of that name is
        replaced."""
        folder = self.layout.inbox / "rejected"
        source, target = self.layout.inbox / file_name, folder / file_name
        with atomic_write(folder / f"{file_name}.reason.txt") as out:
            out.write(reason.encode() + b"\n")
        if not (is_local(source) and is_local(target)):
            remote, moved = cast(UPath, source), cast(UPath, target)
            remote.fs.mv(remote.path, moved.path, recursive=remote.is_dir())
            return target
        folder.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(source, target)
        return target

    def relative(self, path: DataPath) -> str:
        return str(path).removeprefix(str(self.layout.root)).lstrip("/")


def fingerprint(path: DataPath) -> Fingerprint:
    """Size and sha256 of an input, read once in chunks (memory does not grow with it)."""
    digest, size = hashlib.sha256(), 0
    for relative, file in _files(path):
        if relative:
            digest.update(relative.encode() + b"\x00")
        with file.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    return Fingerprint(size, digest.hexdigest())


def _files(path: DataPath) -> list[tuple[str, DataPath]]:
    """The files of an input with their paths relative to it: itself (""), or a table
    folder's files in sorted order."""
    if not path.is_dir():
        return [("", path)]
    if is_local(path):
        found = sorted(p for p in path.rglob("*") if p.is_file())
        return [(p.relative_to(path).as_posix(), p) for p in found]
    base = path.path.rstrip("/") + "/"
    keys = sorted(k for k in path.fs.find(path.path) if k.startswith(base))
    return [(k[len(base) :], path / k[len(base) :]) for k in keys]


def _hashed_copy(source: DataPath, scratch: Path) -> tuple[Path, Fingerprint]:
    """A private local copy of an input (a file, or a folder), hashed while it is copied."""
    digest, size = hashlib.sha256(), 0
    files = _files(source)
    folder = Path(tempfile.mkdtemp(prefix=".input.", suffix=".tmp", dir=scratch))
    for relative, file in files:
        target = folder / (relative or "data")
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative:
            digest.update(relative.encode() + b"\x00")
        with file.open("rb") as data, open(target, "wb") as out:
            while chunk := data.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    return (folder if files and files[0][0] else folder / "data"), Fingerprint(
        size, digest.hexdigest()
    )


def _publish_copy(copy: Path, target: DataPath) -> None:
    """Make a finished copy visible under its content address: a file in one step, a folder
    file by file (the record, written after, is what makes it readable)."""
    if copy.is_file():
        publish(copy, target)
        return
    for file in sorted(p for p in copy.rglob("*") if p.is_file()):
        with atomic_write(target / file.relative_to(copy).as_posix()) as out, open(file, "rb") as f:
            while chunk := f.read(CHUNK):
                out.write(chunk)


def _remove(copy: Path) -> None:
    folder = copy if copy.is_dir() else copy.parent
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    if folder.exists():
        folder.rmdir()


def _changed_at(path: DataPath) -> float | None:
    """The inbox entry's time as the inbox listing reports it (what the sensor compares)."""
    for name, changed in list_names(path.parent, prefix=path.name, folders=True):
        if name == path.name:
            return changed
    return None


def _size(path: DataPath) -> int:
    """Bytes of an inbox file, or of a table folder's files."""
    return sum(file.stat().st_size for _, file in _files(path))


def _hex(sha256: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise LayoutError(f"{sha256!r}: not a sha256")
    return sha256


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))
