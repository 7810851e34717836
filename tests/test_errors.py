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
