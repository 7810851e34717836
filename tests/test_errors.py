"""One error hierarchy: every exception the package defines derives from BatchPipelineError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import batch_pipeline
from batch_pipeline.errors import BatchPipelineError

# The emulator is a separate program (an extra) whose errors become HTTP answers, not raises.
OUTSIDE = ("batch_pipeline.emulator", "batch_pipeline.cli.__main__")


def _modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(batch_pipeline.__path__, "batch_pipeline.")
        if not info.name.startswith(OUTSIDE)
    ]


def _exceptions() -> list[type[BaseException]]:
    found = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return [found[k] for k in sorted(found)]


def test_the_package_defines_exceptions() -> None:
    assert len(_exceptions()) > 10


@pytest.mark.parametrize("exc", _exceptions(), ids=lambda e: f"{e.__module__}.{e.__qualname__}")
def test_every_exception_is_a_batch_pipeline_error(exc: type[BaseException]) -> None:
    assert issubclass(exc, BatchPipelineError)


# ---------------------------------------------------------------- causes a user can act on


def _status(code: int) -> Exception:
    from batch_pipeline.gateway.errors import status_error_class
    from batch_pipeline.gateway.models import BifrostError

    return status_error_class(code)(
        method="POST",
        path="/v1/files",
        status_code=code,
        error=BifrostError(),
        provider="openai",
        request_type=None,
    )


def _wrapped(inner: BaseException, outer: type[Exception]) -> Exception:
    """`outer` raised while handling `inner` with `from None`, as the operations do."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer("wrapped") from None
    except Exception as exc:
        return exc


def _pyarrow_full_disk() -> OSError:
    """What pyarrow raises when a write hits a full disk: an OSError with no errno."""
    return OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")


def _cases() -> list[tuple[str, BaseException, str | None, str | None, int]]:
    import errno

    from batch_pipeline.gateway.errors import (
        GatewayConnectionError,
        GatewayTimeoutError,
        GatewayTLSError,
    )
    from batch_pipeline.ledger.manifest import ManifestBusy
    from batch_pipeline.operations.submit import SubmissionError

    refused = GatewayConnectionError(
        "POST", "/v1/files", "[Errno 111] Connection refused", request_sent=False
    )
    return [
        (
            "enospc",
            OSError(errno.ENOSPC, "No space left on device"),
            "disk_full",
            "no space left on device while writing results of tix: free room and rerun",
            74,
        ),
        (
            "edquot",
            OSError(errno.EDQUOT, "Disk quota exceeded"),
            "disk_full",
            "disk quota exceeded while writing results of tix: free room and rerun",
            74,
        ),
        (
            "pyarrow-full-disk",
            _pyarrow_full_disk(),
            "disk_full",
            "no space left on device while writing results of tix: free room and rerun",
            74,
        ),
        (
            "full-disk-under-an-error",
            _wrapped(OSError(errno.ENOSPC, "full"), SubmissionError),
            "disk_full",
            "no space left on device while writing results of tix: free room and rerun",
            74,
        ),
        (
            "401",
            _status(401),
            "gateway_auth",
            "401 from the gateway: check BIFROST_API_KEY / BIFROST_VIRTUAL_KEY",
            77,
        ),
        (
            "403",
            _status(403),
            "gateway_auth",
            "403 from the gateway: check BIFROST_API_KEY / BIFROST_VIRTUAL_KEY",
            77,
        ),
        (
            "refused",
            refused,
            "gateway_unreachable",
            "gateway unreachable (POST /v1/files: [Errno 111] Connection refused (the request "
            "was not sent)): check that it runs at the configured URL (--gateway / "
            "BIFROST_BASE_URL)",
            69,
        ),
        (
            "connect-timeout",
            GatewayTimeoutError("GET", "/v1/batches", "ConnectTimeout", request_sent=False),
            "gateway_unreachable",
            None,
            69,
        ),
        # a request that went out: its outcome is unknown, the operation's own line says so
        (
            "read-timeout",
            GatewayTimeoutError("POST", "/v1/batches", "ReadTimeout", request_sent=True),
            None,
            None,
            1,
        ),
        (
            "submit-busy",
            _wrapped(ManifestBusy("tix", "submit"), SubmissionError),
            "busy",
            "another run is submitting tix",
            75,
        ),
        (
            "collect-busy",
            ManifestBusy("tix", "collect"),
            "busy",
            "another run is collecting tix",
            75,
        ),
        # not causes a user can act on by themselves: the error speaks for itself
        ("tls", GatewayTLSError("GET", "/", "bad cert", request_sent=False), None, None, 1),
        ("400", _status(400), None, None, 1),
        ("500", _status(500), None, None, 1),
        ("other-oserror", OSError(errno.EACCES, "Permission denied"), None, None, 1),
        ("value-error", ValueError("x"), None, None, 1),
    ]


@pytest.mark.parametrize(
    ("exc", "kind", "message", "exit_code"),
    [case[1:] for case in _cases()],
    ids=[case[0] for case in _cases()],
)
def test_cause_of_names_what_a_user_can_act_on(exc, kind, message, exit_code) -> None:
    from batch_pipeline.errors import EXIT_FAILED, cause_of

    found = cause_of(exc, "tix", doing="writing results")
    if kind is None:
        assert found is None
        return
    assert found is not None and found.kind == kind
    assert found.exit_code == exit_code != EXIT_FAILED
    assert "\n" not in found.message
    if message is not None:
        assert found.message == message


def test_the_key_variables_named_are_the_instance_s() -> None:
    from batch_pipeline.errors import cause_of

    found = cause_of(_status(401), "tix", key_variables=("TICKETS_KEY", "TICKETS_VK"))
    assert (
        found is not None
        and found.message == "401 from the gateway: check TICKETS_KEY / TICKETS_VK"
    )
