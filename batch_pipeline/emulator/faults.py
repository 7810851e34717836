"""The armed faults and how many times each may still fire."""

from __future__ import annotations

import threading

from batch_pipeline.emulator.config import Fault


class FaultBoard:
    """Faults armed at start or through the admin route; each `take` uses one shot."""

    def __init__(self, faults: tuple[Fault, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._armed: list[tuple[Fault, int | None]] = [(f, f.count) for f in faults]

    def arm(self, fault: Fault) -> None:
        """Add a fault."""
        with self._lock:
            self._armed.append((fault, fault.count))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._armed.clear()

    def take(self, kind: str, request_type: str | None = None) -> Fault | None:
        """The first armed fault of this kind for this route, using one of its shots."""
        with self._lock:
            for index, (fault, left) in enumerate(self._armed):
                if fault.kind != kind:
                    continue
                if request_type is not None and not fault.applies_to(request_type):
                    continue
                if left is not None:
                    if left <= 1:
                        del self._armed[index]
                    else:
                        self._armed[index] = (fault, left - 1)
                return fault
            return None

    def describe(self) -> list[dict[str, object]]:
        """The armed faults with their remaining shots (None: unlimited)."""
        with self._lock:
            return [{**f.model_dump(), "remaining": left} for f, left in self._armed]
