"""A batch's output files downloaded in order, each handed over as it ends (operations.collect)."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest

from batch_pipeline.gateway.errors import NotFoundError
from batch_pipeline.gateway.models import BifrostError
from batch_pipeline.operations.collect import _Download, _download_in_order


def not_found(path: str) -> NotFoundError:
    return NotFoundError(
        method="GET",
        path=path,
        status_code=404,
        error=BifrostError(),
        provider="openai",
        request_type=None,
    )


def test_each_file_is_settled_in_turn_404s_included(tmp_path: Path) -> None:
    calls: list[str] = []
    files: list[Future[Path]] = [Future(), Future(), Future()]

    def get(name: str, *, dest: Path) -> None:
        calls.append(name)
        assert all(f.done() for f in files[: len(calls) - 1])  # the ones before are handed over
        if name == "output":
            raise not_found("/v1/files/output/content")
        dest.write_text(name)

    wanted = [
        _Download(n, tmp_path / n, lambda dest, n=n: get(n, dest=dest))
        for n in ("output", "error", "more")
    ]
    _download_in_order(wanted, files)
    assert calls == ["output", "error", "more"]
    assert isinstance(files[0].exception(), NotFoundError)
    assert files[1].result().read_text() == "error"
    assert files[2].result() == tmp_path / "more"


def test_a_failure_other_than_404_ends_the_batch(tmp_path: Path) -> None:
    files: list[Future[Path]] = [Future(), Future(), Future()]
    calls: list[str] = []

    def get(name: str, dest: Path) -> None:
        calls.append(name)
        if name == "error":
            raise OSError(28, "No space left on device")
        dest.write_text(name)

    wanted = [
        _Download(n, tmp_path / n, lambda dest, n=n: get(n, dest))
        for n in ("output", "error", "more")
    ]
    _download_in_order(wanted, files)
    assert calls == ["output", "error"]
    assert files[0].result() == tmp_path / "output"
    for later in files[1:]:
        with pytest.raises(OSError, match="No space left"):
            later.result()
