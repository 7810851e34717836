"""Conditions worth a warning in the UI: batches stuck past their deadline, results about to be
deleted by the provider before anyone collected them, and too many errors."""

from __future__ import annotations

from dataclasses import dataclass

from batch_pipeline.ledger.manifest import Manifest
from batch_pipeline.providers import PROVIDERS

DAY = 86_400.0


@dataclass(frozen=True)
class Finding:
    """Whether a condition holds for one input file, with the evidence."""

    passed: bool
    description: str
    batch_ids: tuple[str, ...] = ()


def stuck_batches(manifest: Manifest, *, now: float, grace_seconds: float) -> Finding:
    """Batches still not terminal past their expires_at plus a grace period."""
    stuck = [
        r.batch_id
        for r in manifest.shards.values()
        if r.in_flight and r.expires_at and now > r.expires_at + grace_seconds
    ]
    if stuck:
        return Finding(
            False,
            f"{len(stuck)} batch(es) still running {grace_seconds / 3600:.1f}h past their "
            "completion window; check them at the provider or cancel the file",
            tuple(stuck),  # type: ignore[arg-type]
        )
    return Finding(True, "no batch is past its completion window")


def retention_risk(
    manifest: Manifest, *, now: float, margin_days: float, collected: bool
) -> Finding:
    """Results not collected yet whose provider deletes them within `margin_days`."""
    if collected:
        return Finding(True, "results collected")
    at_risk = []
    soonest = None
    for r in manifest.shards.values():
        traits = PROVIDERS.get(r.provider)
        if not (r.batch_id and r.created_at and traits):
            continue
        left = (r.created_at + traits.retention_days * DAY - now) / DAY
        if left < margin_days:
            at_risk.append(r.batch_id)
            soonest = left if soonest is None else min(soonest, left)
    if at_risk:
        return Finding(
            False,
            f"{len(at_risk)} batch(es) not collected and the provider deletes their results in "
            f"{max(soonest or 0, 0):.1f} days; collect now",
            tuple(at_risk),
        )
    return Finding(True, f"no uncollected results within {margin_days:g} days of deletion")


def error_rate(errors: int, total: int, *, threshold: float) -> Finding:
    """The share of requests that ended as errors, against a threshold."""
    rate = errors / total if total else 0.0
    if rate > threshold:
        return Finding(False, f"{rate:.1%} of {total} requests failed (threshold {threshold:.1%})")
    return Finding(True, f"{rate:.1%} of {total} requests failed (threshold {threshold:.1%})")
