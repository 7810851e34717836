"""The emulator's shared state: settings, stored files and batches, counters and armed faults."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from batch_pipeline.emulator.config import RUNTIME_KNOBS, EmulatorConfig
from batch_pipeline.emulator.counters import Counters
from batch_pipeline.emulator.faults import FaultBoard
from batch_pipeline.emulator.store import Store


class Runtime:
    """Everything the routes and the batch worker share; safe to use from several threads."""

    def __init__(self, config: EmulatorConfig, root: Path) -> None:
        self.config = config
        self.store = Store(root)
        self.counters = Counters(root / "counters.json")
        self.faults = FaultBoard(config.faults)
        self.wake = threading.Event()

    def update_settings(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Change runtime knobs (timing, error rate...); raises ValueError for any other key."""
        unknown = sorted(set(changes) - RUNTIME_KNOBS)
        if unknown:
            raise ValueError(f"not changeable at runtime: {', '.join(unknown)}")
        merged = {**self.config.model_dump(), **changes}
        self.config = EmulatorConfig.model_validate(merged)
        self.wake.set()
        return self.config
