"""What every benchmark report shares: the machine line and the verdict of a goal."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def machine() -> str:
    """nproc, CPU model, RAM, Python version and the current load of this machine, one line."""
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as info:
        ram_kib = int(info.readline().split()[1])
    return (
        f"{os.cpu_count()} CPU ({model}), {ram_kib / 1024**2:.1f} GiB RAM, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def fast_emulator(state_dir: Path) -> Any:
    """The emulator at its maximum speed on a free port (an EmbeddedEmulator to start with
    `with`): no validation or finalizing delay, unbounded requests per second, short ticks."""
    from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig

    return EmbeddedEmulator(
        EmulatorConfig(
            port=0,
            state_dir=state_dir,
            validation_delay=0.0,
            finalizing_delay=0.0,
            requests_per_second=1e12,
            tick_interval=0.01,
            chunk_size=10_000,
        )
    )


class _WithoutPandas:
    """An import finder that answers as if pandas were not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def hide_pandas() -> None:
    """Make this process run as a base install does, where pandas is not installed (it is a dev
    dependency here, and pyarrow imports it on its first conversion of a Python value wherever
    it is installed: 0.2-0.3 s and ~30 MiB)."""
    sys.meta_path.insert(0, _WithoutPandas())
