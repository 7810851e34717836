"""Fixtures of the emulator tests: httpx clients on running emulators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from batch_pipeline.emulator import EmbeddedEmulator


@pytest.fixture
def http(emulator: EmbeddedEmulator) -> Iterator[httpx.Client]:
    """An httpx client on the default test emulator."""
    with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def client_for() -> Iterator[Callable[[EmbeddedEmulator], httpx.Client]]:
    """httpx clients on other emulators (from emulator_factory), closed at teardown."""
    clients: list[httpx.Client] = []

    def make(emulator: EmbeddedEmulator, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 10)
        client = httpx.Client(base_url=emulator.base_url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
