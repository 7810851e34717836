"""Shared fixtures: a real emulator (Bifrost-compatible gateway) on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from batch_pipeline.emulator import EmbeddedEmulator


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmbeddedEmulator]]:
    """Start emulators with `EmulatorConfig.fast(**overrides)`; all are stopped at teardown.

    Each call gets its own state dir unless `state_dir` is given (pass the same one to restart).
    """
    from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig

    started: list[EmbeddedEmulator] = []

    def start(**overrides: Any) -> EmbeddedEmulator:
        overrides.setdefault("state_dir", tmp_path / f"emulator-{len(started)}")
        emulator = EmbeddedEmulator(EmulatorConfig.fast(**overrides)).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmbeddedEmulator]) -> EmbeddedEmulator:
    """A started emulator with fast timing and a temporary state dir."""
    return emulator_factory()


@pytest.fixture
def instance() -> Iterator[Any]:
    """An ephemeral Dagster instance in memory: what `batch-pipeline run` uses without
    $DAGSTER_HOME."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One S3-compatible server (moto) on loopback for the whole session; always stopped."""
    from object_store import running_s3

    with running_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """An empty bucket of its own, with the AWS environment pointing at the server."""
    from object_store import make_bucket

    return make_bucket(s3_endpoint, monkeypatch)
