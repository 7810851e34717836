"""The armed faults, how many matching requests each still lets through and how often it fires."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from batch_pipeline.emulator.config import Fault


@dataclass
class _Armed:
    fault: Fault
    left: int | None  # shots left; None: until cleared
    skip: int  # matching requests still let through before the first shot


class FaultBoard:
    """Faults armed at start or through the admin route; each `take` uses one shot."""

    def __init__(self, faults: tuple[Fault, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(0)  # the delays of a latency range, the same in every run
        self._armed: list[_Armed] = [_Armed(f, f.count, f.skip) for f in faults]

    def arm(self, fault: Fault) -> None:
        """Add a fault."""
        with self._lock:
            self._armed.append(_Armed(fault, fault.count, fault.skip))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._armed.clear()

    def take(self, kind: str, request_type: str | None = None) -> Fault | None:
        """The first armed fault of this kind for this route, using one of its shots (or one of
        the requests it lets through first, in which case nothing fires)."""
        with self._lock:
            for index, armed in enumerate(self._armed):
                fault = armed.fault
                if fault.kind != kind:
                    continue
                if request_type is not None and not fault.applies_to(request_type):
                    continue
                if armed.skip > 0:
                    armed.skip -= 1
                    return None
                if armed.left is not None:
                    if armed.left <= 1:
                        del self._armed[index]
                    else:
                        armed.left -= 1
                return fault
            return None

    def delay_of(self, fault: Fault) -> float:
        """Seconds this shot of `fault` waits: `delay`, or a draw from [delay, delay_max]."""
        if fault.delay_max is None:
            return fault.delay
        with self._lock:
            return self._rng.uniform(fault.delay, fault.delay_max)

    def describe(self) -> list[dict[str, object]]:
        """The armed faults with their remaining shots (None: unlimited) and skips."""
        with self._lock:
            return [
                {**a.fault.model_dump(), "remaining": a.left, "skip": a.skip} for a in self._armed
            ]
