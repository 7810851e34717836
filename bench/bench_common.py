"""What every benchmark report shares: the machine line and the verdict of a goal."""

from __future__ import annotations

import os
import platform


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
