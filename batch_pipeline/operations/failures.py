"""What stops a submit or a collect, told by its cause: local file errors become the package's own
`StorageFull`/`StorageFailed`, and `is_transient` says which failures a step retry may cure."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.gateway import GatewayStatusError
from batch_pipeline.ledger.storage import StorageError

# 4xx answers that mean "not now" rather than "never": a request timeout, a conflict, a rate limit.
TRANSIENT_STATUS_CODES = frozenset({408, 409, 429})
# Local errors no retry cures: room, quota, permissions or the mount must change first.
_LASTING = {
    errno.ENOSPC: ("no space left on device", "free room and rerun"),
    errno.EDQUOT: ("disk quota exceeded", "free room or raise the quota and rerun"),
    errno.EFBIG: ("file too large for the file system", "free room or move the data root"),
    errno.EROFS: ("read-only file system", "make the data root writable and rerun"),
    errno.EACCES: ("permission denied", "fix the data root's permissions and rerun"),
    errno.EPERM: ("operation not permitted", "fix the data root's permissions and rerun"),
}


class StorageFailed(StorageError):
    """A local file could not be read or written; `retryable` says whether trying again unchanged
    may help (an I/O hiccup) or not (a full disk, a read-only mount)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class StorageFull(StorageFailed):
    """No room (or quota) left where the pipeline writes: nothing helps until room is freed."""


def storage_failure(exc: OSError, doing: str) -> StorageFailed:
    """`exc` as one line naming what was being done and what to do, e.g. `no space left on device
    while collecting tix (/data/results/...): free room and rerun`."""
    where = f" ({exc.filename})" if exc.filename else ""
    lasting = _LASTING.get(exc.errno or 0)
    if lasting is None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return StorageFailed(f"{reason} while {doing}{where}", retryable=True)
    reason, remedy = lasting
    kind = StorageFull if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else StorageFailed
    return kind(f"{reason} while {doing}{where}: {remedy}", retryable=False)


@contextmanager
def storage_errors_told(doing: str) -> Iterator[None]:
    """Raise a local file error of the block as StorageFailed naming `doing` (the package's own
    errors pass as they are: some are OSErrors too, and tell their cause already)."""
    try:
        yield
    except BatchPipelineError:
        raise
    except OSError as exc:
        raise storage_failure(exc, doing) from exc


def is_transient(exc: BaseException) -> bool:
    """True when a retry of the step may succeed unchanged: an error that says so (`retryable`:
    no answer from the gateway, 429, 5xx, an I/O hiccup, an output file not served yet) or a
    408/409 answer. Everything else (a full disk, other 4xx, a broken invariant) is not."""
    if isinstance(exc, GatewayStatusError) and exc.status_code in TRANSIENT_STATUS_CODES:
        return True
    return bool(getattr(exc, "retryable", False))
