"""The data root on local disk or on S3-compatible object storage, through one set of operations.

Paths under the data root are `pathlib.Path` for a local root and `upath.UPath` (fsspec, as
Dagster itself uses) for an `s3://bucket/prefix` root; reading, listing and `exists()` work the
same on both. The few operations whose guarantee depends on the medium live here:

- publishing a finished file: a rename on local disk, a single PUT on S3 (an object becomes
  visible whole or not at all), so no reader ever sees half a file;
- locks: `flock` on local disk; on S3 a lease object created with `If-None-Match: *`, renewed
  and taken over when stale with `If-Match`, since run pods share no kernel; a holder checks
  its lease before acting, and small records are written only over the version it read;
- local copies of objects for code that needs a real file (uploads to the gateway).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from fsspec.asyn import sync
from typing_extensions import TypeIs
from upath import UPath

from batch_pipeline.errors import BatchPipelineError

if TYPE_CHECKING:
    import pyarrow as pa

DataPath = Path | UPath
log = logging.getLogger(__name__)

# A lease is renewed every LEASE_SECONDS / 4 while held; one not renewed for LEASE_SECONDS plus
# the allowed clock skew (pods run NTP) belongs to a process that died and may be taken over.
LEASE_SECONDS = 60.0
CLOCK_SKEW_SECONDS = 10.0
_REMOTE_PROTOCOLS = ("s3",)


class StorageError(BatchPipelineError, OSError):
    """The data root cannot do what was asked (unsupported URL, a lock that stays taken)."""


class LockBusy(StorageError):
    """A non-blocking lock is held by another process."""


def data_root(root: str | os.PathLike[str]) -> DataPath:
    """The data root for a local folder or an `s3://bucket/prefix` URL.

    S3 credentials and endpoint come from the standard AWS environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, instance or pod roles), never from configuration.
    """
    text = str(root) if isinstance(root, UPath) else os.fspath(root)
    if "://" not in text:
        return Path(text).resolve()
    protocol = text.split("://", 1)[0].lower()
    if protocol == "file":
        return Path(text.split("://", 1)[1]).resolve()
    if protocol not in _REMOTE_PROTOCOLS:
        raise StorageError(f"{text}: the data root must be a local folder or an s3:// URL")
    if not text.split("://", 1)[1].strip("/"):
        raise StorageError(f"{text}: name a bucket (s3://bucket or s3://bucket/prefix)")
    return UPath(text.rstrip("/"))


def is_local(path: DataPath) -> TypeIs[Path]:
    """True for a path on local disk (where renames, fsync and flock exist): a local UPath is a
    `pathlib.Path` too; an object store's is not."""
    return isinstance(path, Path)


def fsync_dir(path: DataPath) -> None:
    """Make a rename in `path` durable (object stores have nothing to sync)."""
    if not is_local(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def scratch_for(target: DataPath) -> Iterator[Path]:
    """A local folder for files on their way to or from `target`: its own folder on local
    disk (so publishing is a rename, and a killed run's leftovers are found there), a private
    temp folder, removed afterwards, for an object store."""
    if is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        yield target.parent
        return
    with tempfile.TemporaryDirectory(prefix="batch-pipeline-") as folder:
        yield Path(folder)


def publish(tmp: Path, target: DataPath) -> None:
    """Make the finished local file `tmp` visible at `target` in one step; `tmp` is gone after.

    On local disk `tmp` must be on the same file system (see `scratch_for`): fsync, rename,
    fsync the folder. On S3 a single PUT (multipart for large files): all or nothing.
    """
    if is_local(target):
        with open(tmp, "rb") as data:
            os.fsync(data.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return
    try:
        target.fs.put_file(str(tmp), target.path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: DataPath, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write `path` through a temp file and publish it: all or nothing, on disk or S3."""
    with scratch_for(path) as scratch:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=scratch)
        try:
            with os.fdopen(fd, mode) as handle:
                yield handle
            publish(Path(tmp), path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def local_copy(path: DataPath) -> Iterator[Path]:
    """`path` itself on local disk; for an object, a private local copy removed afterwards."""
    if is_local(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="batch-pipeline-") as folder:
        copy = Path(folder) / path.name
        path.fs.get_file(path.path, str(copy))
        yield copy


def copy_into(source: Path, target: DataPath) -> None:
    """Copy a local file to `target` atomically (the source stays); a folder (a table's) file by
    file, into a hidden folder renamed into place on disk, or object by object on S3."""
    if source.is_dir():
        _copy_folder(source, target)
        return
    with atomic_write(target) as out, open(source, "rb") as data:
        shutil.copyfileobj(data, out, 1 << 20)


def _copy_folder(source: Path, target: DataPath) -> None:
    if not is_local(target):
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            copy_into(path, target / path.relative_to(source).as_posix())
        return
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        shutil.copytree(source, staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def modified_at(path: Path) -> float:
    """When a local file last changed, in epoch seconds: the later of mtime and ctime (a
    published file is renamed into place and keeps its temp file's mtime)."""
    status = path.stat()
    return max(status.st_mtime, status.st_ctime)


def read_parquet(path: DataPath, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file from disk or S3 (pyarrow reading through fsspec)."""
    import pyarrow.parquet as pq  # not at import: the input layer must stay light

    if is_local(path):
        return pq.read_table(path, columns=columns)
    return pq.read_table(path.path, columns=columns, filesystem=path.fs)


def parquet_schema(path: DataPath) -> pa.Schema:
    """The schema of a Parquet file on disk or S3 (its footer only)."""
    import pyarrow.parquet as pq

    if is_local(path):
        return pq.read_schema(path)
    return pq.read_schema(path.path, filesystem=path.fs)


def list_names(
    folder: DataPath,
    *,
    after: str | None = None,
    limit: int | None = None,
    folders: bool = False,
    prefix: str = "",
) -> list[tuple[str, float | None]]:
    """Sorted (name, mtime) of the files directly in `folder` (and, with `folders`, the folders)
    whose name starts with `prefix` and sorts after `after`, at most `limit` of them; on S3 the
    listing asks for that prefix only and pages from `after` (never a full listing), and a
    folder (a common prefix) has no time: 0."""
    if is_local(folder):
        if not folder.is_dir():
            return []
        entries: list[tuple[str, float | None]] = []
        with os.scandir(folder) as scan:
            for entry in scan:
                if (after is not None and entry.name <= after) or not entry.name.startswith(prefix):
                    continue
                try:
                    if entry.is_file() or entry.is_symlink() or (folders and entry.is_dir()):
                        entries.append((entry.name, entry.stat().st_mtime))
                except OSError:  # a broken link, or removed since the listing: mtime None
                    entries.append((entry.name, None))
        entries.sort()
        return entries[:limit] if limit is not None else entries
    bucket, key = _bucket_key(folder)
    base = f"{key}/" if key else ""
    entries, token = [], None
    while True:
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": base + prefix, "Delimiter": "/"}
        params["MaxKeys"] = min(limit - len(entries), 1000) if limit is not None else 1000
        if token:
            params["ContinuationToken"] = token
        elif after is not None:
            params["StartAfter"] = base + after
        page = folder.fs.call_s3("list_objects_v2", **params)
        for item in page.get("Contents", []):
            name = item["Key"][len(base) :]
            if name:
                entries.append((name, item["LastModified"].timestamp()))
        if folders:
            for common in page.get("CommonPrefixes", []):
                entries.append((common["Prefix"][len(base) :].rstrip("/"), 0.0))
            entries.sort()
        token = page.get("NextContinuationToken")
        if not token or (limit is not None and len(entries) >= limit):
            return entries


class Hold:
    """A held lock. `check()` before an action that must not happen twice: it raises LockLost
    once a lease was taken over or went unrenewed for too long (a flock is never lost)."""

    def check(self) -> None:
        return None


class LockLost(StorageError):
    """A lease this process held was lost (it stalled, or could not renew): stop, do nothing."""


@contextmanager
def lock(path: DataPath, *, blocking: bool = True, timeout: float | None = None) -> Iterator[Hold]:
    """Hold the lock file `path` across processes (and, on S3, across machines).

    Non-blocking: LockBusy at once when another holder has it. Blocking: wait, on S3 up to
    `timeout` (default three lease times: a dead holder's lease expires), on local disk as
    long as it takes (the kernel frees a dead holder's flock at once).
    """
    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                raise LockBusy(f"{path}: held by another process") from None
            try:
                yield Hold()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    lease = _Lease(path)
    lease.acquire(blocking=blocking, timeout=3 * LEASE_SECONDS if timeout is None else timeout)
    try:
        yield lease
    finally:
        lease.release()


def read_versioned(path: DataPath) -> tuple[bytes | None, str | None]:
    """A small file's content (None when absent) and its version for `write_versioned`: the
    S3 ETag ("*" when absent), None on local disk, where the caller's flock orders writers."""
    if is_local(path):
        try:
            return path.read_bytes(), None
        except FileNotFoundError:
            return None, None
    bucket, key = _bucket_key(path)
    try:
        return sync(path.fs.loop, _get_object, path.fs, bucket, key)
    except FileNotFoundError:
        return None, "*"


def create_once(path: DataPath, data: bytes) -> bool:
    """Write a small file only if there is none; False when one is there. Of writers racing for
    the same path exactly one gets True: on local disk the finished file is linked into place (a
    link never replaces), on S3 it is a conditional PUT (If-None-Match). A file system without
    hard links gets an exclusive create instead, where a reader may see the file empty for a
    moment."""
    if not is_local(path):
        try:
            write_versioned(path, data, "*")
        except LockLost:
            return False
        return True
    with scratch_for(path) as scratch:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=scratch)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some network and FUSE file systems)
                return _create_exclusive(path, data)
            fsync_dir(path.parent)
            return True
        finally:
            os.unlink(tmp)


def _create_exclusive(path: Path, data: bytes) -> bool:
    """create_once without a link: O_EXCL decides, then the bytes are written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(path.parent)
    return True


def write_versioned(path: DataPath, data: bytes, version: str | None) -> None:
    """Replace a small file read by `read_versioned`, all or nothing. On S3 only if nobody
    wrote it since (a conditional PUT): a writer whose lease was lost cannot overwrite."""
    if is_local(path):
        with atomic_write(path) as out:
            out.write(data)
        return
    _require_conditional_writes()
    bucket, key = _bucket_key(path)
    condition = {"IfNoneMatch": "*"} if version == "*" else {"IfMatch": str(version)}
    try:
        path.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except Exception as exc:
        if _condition_failed(exc):
            raise LockLost(
                f"{path}: changed by another process since it was read; nothing was overwritten"
            ) from None
        raise


@functools.cache
def _require_conditional_writes() -> None:
    """Refuse to lock on S3 with a botocore that would drop If-Match/If-None-Match silently."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("s3")
    members = model.operation_model("PutObject").input_shape.members
    if not {"IfMatch", "IfNoneMatch"} <= set(members):
        raise StorageError(
            "this botocore cannot send conditional writes (If-Match, If-None-Match), which locks "
            "on S3 need; upgrade s3fs and botocore"
        )


def _bucket_key(path: UPath) -> tuple[str, str]:
    bucket, key, _ = path.fs.split_path(path.path)
    return bucket, key


def _condition_failed(exc: BaseException) -> bool:
    """A conditional PUT lost its race: 412 PreconditionFailed, 409 ConditionalRequestConflict
    (concurrent writers), or the object it had to match is gone."""
    if isinstance(exc, FileNotFoundError):
        return True
    error = getattr(exc.__cause__, "response", {}).get("Error", {})
    return error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")


class _Lease(Hold):
    """A lock as an S3 object: created only if absent, renewed while held, taken over when
    its holder stopped renewing it. Compare-and-swap on the ETag makes each step atomic."""

    def __init__(self, path: UPath) -> None:
        _require_conditional_writes()
        self.path = path
        self.bucket, self.key = _bucket_key(path)
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.renewed_at = 0.0  # monotonic time of the last write that made the lease ours
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def check(self) -> None:
        """LockLost once the lease may belong to another process: taken over, or not renewed
        for most of its time (a quarter is kept as a margin against clock drift)."""
        if self.etag is None or time.monotonic() - self.renewed_at > LEASE_SECONDS * 0.75:
            raise LockLost(f"{self.path}: lease lost (this process stalled or could not renew)")

    def acquire(self, *, blocking: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while not self._try_acquire():
            if not blocking:
                raise LockBusy(f"{self.path}: held by another process")
            if time.monotonic() > deadline:
                raise StorageError(f"{self.path}: lock still held after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._renewer = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.etag is None:
            return  # taken over: the lease is another process's now
        try:
            # Delete only our own lease: conditional where the store supports it, else compare
            # first (a takeover in between is then possible, but only after we stalled).
            try:
                self.path.fs.call_s3(
                    "delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag
                )
            except Exception as exc:
                if _condition_failed(exc):
                    return
                if self._current()[1] == self.etag:
                    self.path.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            pass
        except Exception as exc:  # the work is done; the lease expires by itself
            log.warning("%s: lease not released (%s); it expires by itself", self.path, exc)

    def _body(self) -> bytes:
        return orjson.dumps({"owner": self.owner, "expires_at": time.time() + LEASE_SECONDS})

    def _put(self, **condition: str) -> bool:
        """One conditional write of the lease; True when the lease is ours afterwards.

        A PUT whose answer was lost may be sent again by the client and then fail its own
        condition: when the object holds our owner, the write did happen, and it counts.
        """
        started = time.monotonic()
        try:
            answer = self.path.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=self._body(), **condition
            )
        except Exception as exc:
            if not _condition_failed(exc):
                raise
            try:
                holder, etag = self._current()
            except FileNotFoundError:
                return False
            if holder.get("owner") != self.owner:
                return False
            answer = {"ETag": etag}
        self.etag, self.renewed_at = answer["ETag"], started
        return True

    def _current(self) -> tuple[dict[str, Any], str]:
        data, etag = sync(self.path.fs.loop, _get_object, self.path.fs, self.bucket, self.key)
        return orjson.loads(data), etag

    def _try_acquire(self) -> bool:
        if self._put(IfNoneMatch="*"):
            return True
        try:
            holder, etag = self._current()
        except FileNotFoundError:
            return self._put(IfNoneMatch="*")  # released between our two requests
        if time.time() <= holder.get("expires_at", 0) + CLOCK_SKEW_SECONDS:
            return False
        return self._put(IfMatch=etag)  # a dead holder's lease: exactly one taker wins

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4):
            try:
                renewed = self._put(IfMatch=str(self.etag))
            except Exception as exc:  # a network blip: the lease has time for another try
                log.warning("%s: lease renewal failed (%s); trying again", self.path, exc)
                continue
            if not renewed:
                log.warning("%s: lease lost (this process stalled past it)", self.path)
                self.etag = None
                return


async def _get_object(fs: Any, bucket: str, key: str) -> tuple[bytes, str]:
    """Body and ETag of one object from the same response (so they belong together)."""
    answer = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        return await body.read(), answer["ETag"]
