"""A local Bifrost-compatible gateway: the unified `/v1/files` + `/v1/batches` API with OpenAI
and Anthropic batch behaviour, a deterministic fake model, fault injection and admin counters.

Start it with `batch-pipeline emulator` or in-process with `EmbeddedEmulator(EmulatorConfig())`.

Deterministic failures (see docs/emulator.md):
- `[[fail:NNN]]` anywhere in a request's body (e.g. in a message's content) makes that request
  fail with HTTP status NNN, reported as the provider would report it in the batch: OpenAI an
  error-file line with `response.status_code` NNN and an error body (400 invalid_request_error,
  429 rate_limit_exceeded, 5xx server_error...); Anthropic a result of type `errored`.
- An invalid parameter (missing `messages`, `max_tokens` < 1...) fails with 400 as the real API.
- In an OpenAI file-based batch, a body `model` that still carries a provider prefix
  (`openai/gpt-4o-mini`) fails with 404 `model_not_found`, as OpenAI would.
- `error_rate` (seeded by `seed`) fails that share of requests with a 500.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batch_pipeline.errors import PipelineError

if TYPE_CHECKING:
    from batch_pipeline.emulator.config import EmulatorConfig, Fault
    from batch_pipeline.emulator.counters import fingerprint_requests
    from batch_pipeline.emulator.server import EmbeddedEmulator, EmulatorStartError

# Imported on first use so `batch-pipeline --help` does not load uvicorn and starlette.
_EXPORTS: dict[str, str] = {
    "EmulatorConfig": "batch_pipeline.emulator.config",
    "Fault": "batch_pipeline.emulator.config",
    "fingerprint_requests": "batch_pipeline.emulator.counters",
    "EmbeddedEmulator": "batch_pipeline.emulator.server",
    "EmulatorStartError": "batch_pipeline.emulator.server",
}

__all__ = [
    "EmbeddedEmulator",
    "EmulatorConfig",
    "EmulatorStartError",
    "Fault",
    "fingerprint_requests",
]


# What the `emulator` extra installs: the server's dependencies.
_EXTRA_MODULES = ("starlette", "uvicorn", "multipart", "python_multipart", "anyio")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_EXPORTS[name])
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _EXTRA_MODULES:
            raise PipelineError(
                "the emulator needs its extra: pip install 'batch-pipeline[emulator]'"
            ) from None
        raise
    return getattr(module, name)
