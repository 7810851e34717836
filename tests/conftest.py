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
