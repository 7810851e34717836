"""The armed faults, how many matching requests each still lets through and how often it fires."""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from batch_pipeline.emulator.config import Fault

# Faults that make a finished batch's output file lie about its requests.
OUTPUT_LIES = ("duplicate_ids", "unknown_ids", "fewer_lines")


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


def lie_in_output(path: Path, fault: Fault) -> None:
    """Rewrite a JSONL output file as `fault` says: its first `lines` lines repeated at the end
    (duplicate_ids), copied at the end under custom_ids no request had (unknown_ids), or dropped
    (fewer_lines)."""
    tmp = path.with_name(path.name + ".lie")
    with path.open("rb") as source, tmp.open("wb") as target:
        first = []
        for index, line in enumerate(source):
            if index < fault.lines:
                first.append(line)
                if fault.kind == "fewer_lines":
                    continue
            target.write(line)
        for line in first if fault.kind != "fewer_lines" else []:
            if fault.kind == "unknown_ids":
                record = orjson.loads(line)
                record["custom_id"] = f"not-requested-{record.get('custom_id')}"
                line = orjson.dumps(record) + b"\n"
            target.write(line)
    os.replace(tmp, path)
