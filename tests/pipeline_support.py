"""Shared steps for the pipeline tests: sample input files and emulator counters."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def chat_lines(
    n: int, *, model: str = "openai/gpt-4o-mini", fail: dict[int, int] | None = None
) -> list[dict]:
    """`n` chat-completion batch lines; `fail` maps a 1-based line to an HTTP status to inject."""
    lines = []
    for i in range(1, n + 1):
        text = f"request {i}: say something short"
        if fail and i in fail:
            text += f" [[fail:{fail[i]}]]"
        lines.append(
            {
                "custom_id": f"req-{i:04d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": text}],
                },
            }
        )
    return lines


def anthropic_lines(n: int, *, fail: dict[int, int] | None = None) -> list[dict]:
    """`n` Anthropic-style lines for claude."""
    lines = []
    for i in range(1, n + 1):
        text = f"document {i}: extract the date"
        if fail and i in fail:
            text += f" [[fail:{fail[i]}]]"
        lines.append(
            {
                "custom_id": f"doc-{i:04d}",
                "params": {
                    "model": "anthropic/claude-3-5-haiku-latest",
                    "max_tokens": 32,
                    "messages": [{"role": "user", "content": text}],
                },
            }
        )
    return lines


def write_input(data_root: Path, name: str, lines: list[Any]) -> Path:
    """Write lines (dicts as JSON, str as-is) to data_root/inbox/<name>.jsonl."""
    inbox = data_root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / f"{name}.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def counters(base_url: str) -> dict[str, Any]:
    return httpx.get(f"{base_url}/_emulator/counters").json()


def arm(base_url: str, **fault: Any) -> None:
    httpx.post(f"{base_url}/_emulator/faults", json=fault).raise_for_status()


def creates_per_shard(base_url: str) -> dict[str, int]:
    """How many batches the emulator created for each shard id (from batch metadata)."""
    return counters(base_url)["batches_by_metadata"].get("bp_shard", {})


class Overlap:
    """Counts the calls of a wrapped method and how many ran at once. The first two calls wait
    for each other, so a test whose calls never overlap fails (the barrier breaks) instead of
    passing by luck."""

    def __init__(self) -> None:
        self.calls = self.running = self.most = 0
        self._lock = threading.Lock()
        self._together = threading.Barrier(2, timeout=20)

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(owner: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls, self.running = self.calls + 1, self.running + 1
                self.most, first_two = max(self.most, self.running), self.calls <= 2
            try:
                if first_two:
                    self._together.wait()
                return method(owner, *args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1

        return counted
