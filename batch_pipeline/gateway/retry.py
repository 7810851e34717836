"""When and how long to wait before retrying an idempotent gateway call.

Exponential backoff with full jitter (delay drawn from [0, min(cap, base * 2**n)]) spreads
retries of many workers apart; a `Retry-After` header from the server wins over the backoff; the
whole sequence is bounded by a total time budget so a caller never waits unboundedly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from batch_pipeline.gateway.errors import GatewayError, GatewayStatusError, GatewayTransportError

RETRYABLE_STATUS_CODES = frozenset({429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None if absent
    or unreadable. A date in the past means 0."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)


def is_retryable(error: GatewayError) -> bool:
    """True for errors an idempotent call may retry: no answer at all (except an untrusted TLS
    certificate), or 429/500/502/503/504."""
    if isinstance(error, GatewayTransportError):
        return error.retryable
    return isinstance(error, GatewayStatusError) and error.status_code in RETRYABLE_STATUS_CODES


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff parameters and the total budget (seconds) of one call's retries."""

    max_total_seconds: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 8.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay after the `attempt`-th failure (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)

    def next_delay(self, error: GatewayError, attempt: int, elapsed: float) -> float | None:
        """Seconds to sleep before the next attempt, or None to give up and raise `error`."""
        if not is_retryable(error):
            return None
        retry_after = error.retry_after if isinstance(error, GatewayStatusError) else None
        delay = retry_after if retry_after is not None else self.backoff(attempt)
        if elapsed + delay > self.max_total_seconds:
            return None
        return delay
