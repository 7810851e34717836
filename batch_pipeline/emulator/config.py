"""Every knob of the emulator: timing, failure injection, auth and limits, in one pydantic model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "slow",
    "slow_answer",
    "reset_download",
    "stall_download",
    "malformed_output",
    "not_found",
    "duplicate_ids",
    "unknown_ids",
    "fewer_lines",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

# Request types (Bifrost's names) a fault can be limited to; empty `routes` means every /v1 route.
REQUEST_TYPES: tuple[str, ...] = (
    "batch_create",
    "batch_list",
    "batch_retrieve",
    "batch_cancel",
    "batch_results",
    "file_upload",
    "file_list",
    "file_retrieve",
    "file_delete",
    "file_content",
    "chat_completion",
    "text_completion",
    "embedding",
    "responses",
    "messages",
)


class Fault(BaseModel):
    """One injected failure; it fires `count` times (None: until the faults are cleared), after
    letting the first `skip` matching requests through.

    rate_limit: 429 with Retry-After; server_error: a 5xx answer; slow: the request is received
    whole, then waits `delay` seconds (or a time drawn from [delay, delay_max], a gateway whose
    latency varies) before it is handled, even if the client gave up meanwhile;
    slow_answer: the request is handled (a create makes its batch), then its answer waits `delay`
    seconds, so a client that times out cannot know the outcome;
    reset_download: a file content download is cut after `after_bytes` bytes; stall_download: a
    file content download pauses `delay` seconds after `after_bytes` bytes, then completes;
    malformed_output: the next `count` finished batches get `lines` truncated lines in their
    output (OpenAI output file, Anthropic results);
    not_found: a 404 answer, as for an object that is gone (a lost output file);
    duplicate_ids / unknown_ids / fewer_lines: the next `count` finished OpenAI-style batches get
    their first `lines` output lines repeated / copies of them under custom_ids they never had /
    those lines dropped (a gateway that lies about its output).
    """

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    count: int | None = Field(default=1, ge=1)
    routes: tuple[str, ...] = ()
    skip: int = Field(default=0, ge=0, description="matching requests let through before firing")
    retry_after: float = Field(default=1.0, ge=0)
    status: int = Field(default=500, ge=500, le=599)
    delay: float = Field(default=1.0, ge=0)
    delay_max: float | None = Field(
        default=None, ge=0, description="slow: wait a time drawn from [delay, delay_max]"
    )
    after_bytes: int = Field(default=0, ge=0)
    lines: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _delay_range(self) -> Fault:
        if self.delay_max is not None and self.delay_max < self.delay:
            raise ValueError("delay_max must be at least delay")
        return self

    def applies_to(self, request_type: str) -> bool:
        """True when this fault targets the given request type."""
        return not self.routes or request_type in self.routes


class EmulatorConfig(BaseModel):
    """How the emulator listens, how fast batches move and which failures it injects."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    state_dir: Path | None = Field(
        default=None, description="where files and batches persist; None: a temporary directory"
    )
    validation_delay: float = Field(default=1.0, ge=0, description="seconds in `validating`")
    requests_per_second: float = Field(
        default=25.0, gt=0, description="requests each batch processes per second"
    )
    finalizing_delay: float = Field(default=1.0, ge=0, description="seconds in `finalizing`")
    cancel_delay: float = Field(default=0.5, ge=0, description="seconds in `cancelling`")
    completion_window_seconds: float = Field(
        default=3600.0, gt=0, description='real seconds a "24h" completion window lasts'
    )
    tick_interval: float = Field(default=0.1, gt=0, description="worker wake-up period, seconds")
    error_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of requests failing with a 500, seeded"
    )
    seed: int = Field(default=0, description="seed of the error_rate draw")
    bad_answer_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of structured-output answers that are invalid JSON or a refusal",
    )
    api_keys: tuple[SecretStr, ...] = Field(
        default=(), description="when set, /v1 requests need one of these keys"
    )
    virtual_keys: tuple[SecretStr, ...] = Field(
        default=(),
        description="when set, /v1 requests need one of these Bifrost virtual keys as x-bf-vk "
        "(and, with api_keys, one of those as well, in another header)",
    )
    faults: tuple[Fault, ...] = Field(default=(), description="faults armed at start")
    retrieve_404_seconds: float = Field(
        default=0.0, ge=0, description="a batch retrieve answers 404 this long after create"
    )
    max_requests_per_batch: int = Field(default=50_000, ge=1)
    max_body_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    embedding_dimensions: int = Field(default=1536, ge=1, le=8192)
    chunk_size: int = Field(default=1000, ge=1, description="max requests per batch per tick")
    bedrock_role_arn: str | None = Field(
        default=None, description="the Bedrock key's `arn`: the role used when a create has none"
    )
    bedrock_min_records: int = Field(
        default=100, ge=1, description="fewer records fail a Bedrock job at validation"
    )
    bedrock_max_records: int = Field(
        default=50_000, ge=1, description="more records fail a Bedrock job at validation"
    )
    tls_certfile: Path | None = Field(
        default=None, description="serve https with this PEM certificate (needs tls_keyfile)"
    )
    tls_keyfile: Path | None = Field(default=None, description="the certificate's private key")

    @model_validator(mode="after")
    def _tls_pair(self) -> EmulatorConfig:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together")
        return self

    @classmethod
    def fast(cls, **overrides: Any) -> EmulatorConfig:
        """Timing for tests: a batch of ~10 requests is terminal well under a second."""
        values: dict[str, Any] = {
            "port": 0,
            "validation_delay": 0.02,
            "requests_per_second": 500.0,
            "finalizing_delay": 0.02,
            "cancel_delay": 0.02,
            "completion_window_seconds": 60.0,
            "tick_interval": 0.01,
        }
        values.update(overrides)
        return cls(**values)


# Knobs that PATCH /_emulator/config may change while the emulator runs.
RUNTIME_KNOBS: frozenset[str] = frozenset(
    {
        "validation_delay",
        "requests_per_second",
        "finalizing_delay",
        "cancel_delay",
        "completion_window_seconds",
        "tick_interval",
        "error_rate",
        "seed",
        "bad_answer_rate",
        "retrieve_404_seconds",
        "embedding_dimensions",
        "chunk_size",
        "bedrock_min_records",
        "bedrock_max_records",
    }
)
