"""The root of the package's one exception hierarchy.

Every error the package raises on purpose derives from `BatchPipelineError`, whatever the layer:

BatchPipelineError
├── GatewayError          the Bifrost client (gateway/errors.py has its own tree below it)
├── InputRejected         an input file or table that cannot be submitted, every problem listed
├── InputChanged          an input rewritten while it was read
├── LayoutError           a file or partition name the data layout refuses (InputRefused: new
│                         content under a used name, known content under a new one)
├── StorageError          the data root cannot do what was asked (LockBusy, LockLost,
│                         StorageFailed: a local file error told by cause, StorageFull)
├── ManifestBusy          another process holds the same work on the same input
├── SubmissionError       submission stopped (SubmissionUncertain: a create's outcome unknown)
├── BudgetExceeded        submitting would pass a budget
├── PriceTableError       a price table that cannot be used
├── CollectError          an input cannot be collected (yet) (OutputUnavailable: a 404 output)
├── CancelError           nothing to cancel
├── RetryError            no retry wave can be written
└── PipelineError         the Dagster integration or the CLI cannot do what was asked

A message is one line a person can act on and never contains a secret, so callers (runs, the
CLI) can show `str(exc)` as it is.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


class BatchPipelineError(Exception):
    """Base of every error `batch_pipeline` raises on purpose; `str()` is one line, secret-free."""


class PipelineError(BatchPipelineError):
    """The Dagster integration or the command line cannot do what was asked."""


# Exit codes of the command line per cause (sysexits.h), so a script can tell them apart.
EXIT_FAILED = 1
EXIT_CODES = {"disk_full": 74, "gateway_auth": 77, "gateway_unreachable": 69, "busy": 75}
KEY_VARIABLES = ("BIFROST_API_KEY", "BIFROST_VIRTUAL_KEY")  # what an instance reads by default
_BUSY_VERBS = {"submit": "submitting", "collect": "collecting"}
_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# Writers that report a full disk without an errno (pyarrow) still name it in their message.
_DISK_FULL_TEXT = {f"[errno {code}]": text for code, text in _DISK_FULL.items()}


@dataclass(frozen=True)
class Cause:
    """A failure's cause as its user should read it: a kind, one actionable line, an exit code."""

    kind: str
    message: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.kind, EXIT_FAILED)


def cause_of(
    exc: BaseException,
    name: str,
    *,
    doing: str = "writing",
    key_variables: tuple[str, str] = KEY_VARIABLES,
) -> Cause | None:
    """The cause of `exc` (or of an error it wraps) when it is one a user can act on: a full
    disk, a refused key, an unreachable gateway, another run holding the same file; else None.
    One place for the command line's summary and the steps' failures, so both say the same."""
    from batch_pipeline.gateway.errors import (
        AuthenticationError,
        GatewayTLSError,
        GatewayTransportError,
    )
    from batch_pipeline.ledger.manifest import ManifestBusy

    for error in reversed(_chain(exc)):  # the root cause first
        if isinstance(error, OSError) and (full := _disk_full(error)):
            what = f"{doing} of {name}" if name else doing
            return Cause("disk_full", f"{full} while {what}: free room and rerun")
        if isinstance(error, AuthenticationError):
            keys = " / ".join(key_variables)
            said = f" ({error.message})" if error.error.error and error.error.error.message else ""
            return Cause(
                "gateway_auth", f"{error.status_code} from the gateway{said}: check {keys}"
            )
        if (  # never reached: after a request went out, the outcome is unknown, not this
            isinstance(error, GatewayTransportError)
            and not error.request_sent
            and not isinstance(error, GatewayTLSError)
        ):
            return Cause(
                "gateway_unreachable",
                f"gateway unreachable ({error}): check that it runs at the configured URL "
                "(--gateway / BIFROST_BASE_URL)",
            )
        if isinstance(error, ManifestBusy):
            verb = _BUSY_VERBS.get(error.what, f"running a {error.what} of")
            return Cause("busy", f"another run is {verb} {error.name}")
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps, explicitly or not (`raise ... from None` still keeps the context)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _disk_full(error: OSError) -> str | None:
    if error.errno in _DISK_FULL:
        return _DISK_FULL[error.errno]
    text = str(error).lower()
    return next((full for mark, full in _DISK_FULL_TEXT.items() if mark in text), None)
