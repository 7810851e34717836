"""Failures told by cause: a real full disk becomes StorageFull in one line, and only transient
failures let a step's retry policy retry (Dagster's Failure.allow_retries)."""

from __future__ import annotations

import errno

import pytest

from batch_pipeline.errors import BatchPipelineError, cause_of
from batch_pipeline.gateway import GatewayTimeoutError
from batch_pipeline.gateway.errors import status_error_class
from batch_pipeline.gateway.models import BifrostError
from batch_pipeline.integration.assets import failure
from batch_pipeline.ledger.storage import StorageError
from batch_pipeline.operations.collect import CollectError, OutputUnavailable
from batch_pipeline.operations.failures import (
    StorageFailed,
    StorageFull,
    is_transient,
    storage_errors_told,
    storage_failure,
)


def test_a_real_full_device_is_storage_full_in_one_line() -> None:
    told = storage_errors_told("writing results of tix")
    with pytest.raises(StorageFull) as raised, told, open("/dev/full", "wb") as full:
        full.write(b"x")
        full.flush()
    exc = raised.value
    assert str(exc) == "no space left on device while writing results of tix: free room and rerun"
    assert isinstance(exc, StorageError) and isinstance(exc, BatchPipelineError)
    assert isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC
    assert not exc.retryable and not is_transient(exc)


def test_a_missing_file_names_itself_and_may_be_retried(tmp_path) -> None:
    with pytest.raises(StorageFailed) as raised, storage_errors_told("collecting tix"):
        (tmp_path / "gone.json").read_bytes()
    assert (
        str(raised.value)
        == f"No such file or directory while collecting tix ({tmp_path}/gone.json)"
    )
    assert is_transient(raised.value)


def test_the_package_errors_pass_as_they_are() -> None:
    error = CollectError("tix: batches of shards s1 are not finished yet")
    with pytest.raises(CollectError) as raised, storage_errors_told("collecting tix"):
        raise error
    assert raised.value is error


def test_read_only_and_quota_are_lasting() -> None:
    read_only = storage_failure(OSError(errno.EROFS, "Read-only file system"), "collecting t")
    assert type(read_only) is StorageFailed and not read_only.retryable
    assert str(read_only).endswith("make the data root writable and rerun")
    quota = storage_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), "submitting t")
    assert type(quota) is StorageFull and not quota.retryable


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        *[(status, False) for status in (400, 401, 403, 404, 422)],
        *[(status, True) for status in (408, 409, 429, 500, 503)],
    ],
)
def test_only_transient_gateway_answers_may_be_retried(status: int, transient: bool) -> None:
    exc = status_error_class(status)(
        method="GET",
        path="/v1/batches/b1",
        status_code=status,
        error=BifrostError.model_validate({"error": {"message": "no"}}),
        provider="openai",
        request_type="batch_retrieve",
    )
    assert is_transient(exc) is transient
    step = failure(exc, "tix")
    assert step.allow_retries is transient
    found = cause_of(exc, "tix")  # 401/403 name the key variables, the others the error
    assert step.description == (found.message if found else f"tix: {exc}")
    assert "\n" not in step.description


def test_no_answer_and_an_output_not_served_yet_may_be_retried_a_full_disk_not() -> None:
    timeout = GatewayTimeoutError("GET", "/v1/batches", "read timed out", request_sent=True)
    assert failure(timeout, "tix").allow_retries
    assert failure(OutputUnavailable("tix: batch b1 ... answered 404"), "tix").allow_retries
    full = storage_failure(OSError(errno.ENOSPC, "No space left on device"), "collecting tix")
    step = failure(full, "tix")
    assert not step.allow_retries and step.description.startswith("no space left on device")
    assert not failure(CollectError("tix: nothing was submitted yet"), "tix").allow_retries
