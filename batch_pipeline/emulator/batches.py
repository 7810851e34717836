"""What every provider's batches share: the behaviour interface the routes and the worker call,
line outcomes, Bifrost's serial list cursor and the malformed-output fault."""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from batch_pipeline.emulator.errors import ApiError
from batch_pipeline.emulator.files import ProviderFiles
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.store import BatchRecord

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled", "ended"})
Outcome = Literal["succeeded", "failed", "expired", "canceled"]
GiveUpReason = Literal["expired", "canceled"]


@dataclass(frozen=True)
class LineOutcome:
    """What answering (or giving up on) one request writes: an output and/or an error line."""

    outcome: Outcome
    out: bytes | None = None
    err: bytes | None = None


def json_line(value: Any) -> bytes:
    """One JSONL line."""
    return orjson.dumps(value) + b"\n"


def read_result_lines(
    path: Path, to_item: Callable[[Any, int], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A result file as Bifrost's /results reads it: `to_item(value, index)` of each JSON line
    (index from 0, blank lines counted), and a `parse_errors` entry for each line that is not
    JSON (1-based line numbers); blank lines are skipped."""
    items: list[dict[str, Any]] = []
    parse_errors: list[dict[str, Any]] = []
    with path.open("rb") as source:
        for index, line in enumerate(source):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                message = f"failed to parse JSONL line {index + 1}: {exc}"
                parse_errors.append({"code": "parse_error", "message": message, "line": index + 1})
                continue
            items.append(to_item(value, index))
    return items, parse_errors


def seconds(value: float | None) -> int | None:
    """A Unix timestamp in whole seconds, as Bifrost reports every time."""
    return None if value is None else int(value)


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """Go's omitempty for the fields that are null."""
    return {key: value for key, value in values.items() if value is not None}


WINDOW = re.compile(r"^(\d+(?:\.\d+)?)(h|m|s)$")
WINDOW_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def window_seconds(window: str) -> float | None:
    """Seconds of a completion window written as a Go duration (`24h`, `90m`); None if not one."""
    match = WINDOW.match(window.strip())
    if match is None:
        return None
    return float(match.group(1)) * WINDOW_UNITS[match.group(2)]


def timeline(rt: Runtime, window: str) -> tuple[float, float, float]:
    """(now, deadline, reported expiry) of a new batch: the emulator's deadline is the scaled
    window (`completion_window_seconds`), the reported `expires_at` the provider's real one."""
    now = time.time()
    reported = window_seconds(window) or 24 * 3600.0
    return now, now + rt.config.completion_window_seconds, now + reported


def encode_cursor(native: str, key_index: int = 0) -> str:
    """Bifrost's serial cursor: base64url (padded) of {"v":1,"i":key,"c":native}."""
    raw = orjson.dumps({"v": 1, "i": key_index, "c": native})
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> str | None:
    """The native cursor inside a serial cursor; None when it is not one."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        return None
    if isinstance(data, dict) and data.get("v") == 1 and isinstance(data.get("c"), str):
        return data["c"]
    return None


def page_after(ids: list[str], after: str | None, limit: int) -> tuple[int, int, bool]:
    """(start, stop, has_more) of the page following serial cursor `after`; anything that is not
    a serial cursor is Bifrost's 500 `invalid pagination cursor`."""
    start = 0
    if after:
        native = decode_cursor(after)
        if native is None:
            raise ApiError(None, "invalid pagination cursor", bifrost=True)
        if native:
            if native not in ids:
                raise ApiError(400, f"invalid pagination cursor: {after}")
            start = ids.index(native) + 1
    stop = min(start + limit, len(ids))
    return start, stop, stop < len(ids)


def corrupt_lines(path: Path, lines: int) -> None:
    """Truncate the first `lines` lines of a JSONL file to half their length (malformed_output)."""
    tmp = path.with_name(path.name + ".corrupt")
    with path.open("rb") as source, tmp.open("wb") as target:
        for index, line in enumerate(source):
            if index < lines:
                body = line.rstrip(b"\n")
                line = body[: max(len(body) // 2, 1)] + b"\n"
            target.write(line)
    os.replace(tmp, path)


def end_validation(
    rt: Runtime, batch: BatchRecord, total: int, errors: list[dict[str, Any]] | None = None
) -> None:
    """Record the end of a batch's validation: failed with `errors`, else in progress over
    `total` requests."""
    now = time.time()
    with rt.store.lock:
        if errors:
            batch.errors = errors
            batch.status = "failed"
            batch.stamp("failed_at", now)
        else:
            batch.total = total
            if batch.status == "validating":
                batch.status = "in_progress"
            batch.stamp("in_progress_at", now)
        rt.store.save_batch(batch)


class ProviderBatches(ABC):
    """One provider's batch behaviour behind Bifrost; subclasses fill in the provider specifics."""

    name: str = ""
    completed_status = "completed"
    cancelled_status = "cancelled"
    expired_status = "expired"
    uses_finalizing = True
    cancellable_statuses: frozenset[str] = frozenset({"validating", "in_progress"})
    files: ProviderFiles

    def normalize_id(self, rt: Runtime, batch_id: str) -> str:
        """The stored id a path id names (Gemini accepts ids without `batches/`)."""
        return batch_id

    def retrieve_view(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """The retrieve body; providers whose counts live in storage read them here."""
        return self.view(batch)

    def list_view(self, batch: BatchRecord) -> dict[str, Any]:
        """A list item's body (without extra_fields); the retrieve body unless the provider
        lists less."""
        return self.view(batch)

    def final_status(self, batch: BatchRecord) -> str:
        """The status a batch whose every request was answered ends in."""
        return self.completed_status

    # routes
    @abstractmethod
    def create(self, rt: Runtime, body: dict[str, Any]) -> BatchRecord:
        """Validate a create request and store the new batch."""

    @abstractmethod
    def create_view(self, batch: BatchRecord) -> dict[str, Any]:
        """The create response body (without extra_fields)."""

    @abstractmethod
    def view(self, batch: BatchRecord) -> dict[str, Any]:
        """The retrieve / list item body (without extra_fields)."""

    @abstractmethod
    def cancel_view(self, batch: BatchRecord) -> dict[str, Any]:
        """The cancel response body (without extra_fields)."""

    @abstractmethod
    def results(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """The /results body (without extra_fields): items and optional parse errors."""

    @abstractmethod
    def not_found(self, batch_id: str) -> ApiError:
        """The provider's 404 for an unknown batch."""

    def cancel(self, rt: Runtime, batch: BatchRecord) -> dict[str, Any]:
        """Request cancellation; the worker finishes it after `cancel_delay`."""
        with rt.store.lock:
            if batch.status in self.cancellable_statuses:
                batch.status = "cancelling"
                batch.stamp("cancelling_at", time.time())
                rt.store.save_batch(batch)
            elif batch.status in TERMINAL_STATUSES:
                self.refuse_cancel(batch)
            view = self.cancel_view(batch)
        rt.wake.set()
        return view

    @abstractmethod
    def refuse_cancel(self, batch: BatchRecord) -> None:
        """What cancelling a finished batch does: raise the provider's error, or nothing."""

    # worker hooks
    @abstractmethod
    def validate(self, rt: Runtime, batch: BatchRecord) -> None:
        """Leave `validating`: set `total` and move to in_progress, or fail the batch."""

    @abstractmethod
    def input_path(self, rt: Runtime, batch: BatchRecord) -> Path:
        """The JSONL file of the batch's requests."""

    @abstractmethod
    def answer_line(self, rt: Runtime, batch: BatchRecord, line: bytes) -> LineOutcome:
        """Run one request through the fake model."""

    @abstractmethod
    def give_up_line(self, batch: BatchRecord, line: bytes, reason: GiveUpReason) -> LineOutcome:
        """What an unprocessed request becomes when the batch expires or is cancelled."""

    @abstractmethod
    def publish(self, rt: Runtime, batch: BatchRecord) -> None:
        """Turn the finished part files into what clients download (files or results)."""
