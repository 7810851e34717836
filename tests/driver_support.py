"""Drive a pipeline instance in the tests exactly as the command line does: definitions from the
factory, the PipelineDriver evaluating its sensors and executing the runs they request."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import dagster as dg

from batch_pipeline import build_pipeline_defs
from batch_pipeline.integration.assets import INVARIANT_CHECK
from batch_pipeline.integration.driver import PipelineDriver, RunSummary, Tick
from batch_pipeline.integration.loading import load_pipeline

NAME = "t"  # the instance the tests drive, unless they name another


def settings(
    base_url: str, data_root: Path | str, extra: dict[str, Any] | None = None, **gateway: Any
) -> dict[str, Any]:
    """Settings of an instance over `data_root` and the gateway at `base_url`; inbox files are
    taken at once; `extra` (nested like PipelineSettings) and `gateway` fields override."""
    chosen: dict[str, Any] = {
        "name": NAME,
        "data_root": str(data_root),
        "inputs": {"settle_seconds": 0},
        **(extra or {}),
    }
    chosen["gateway"] = {"base_url": base_url, **chosen.get("gateway", {}), **gateway}
    return chosen


def driver(
    instance: dg.DagsterInstance,
    base_url: str,
    data_root: Path | str,
    extra: dict[str, Any] | None = None,
    **gateway: Any,
) -> PipelineDriver:
    """A driver of a fresh instance (see `settings`) on the given Dagster instance."""
    chosen = settings(base_url, data_root, extra, **gateway)
    return PipelineDriver(
        build_pipeline_defs(chosen), chosen["name"], instance, log_level="CRITICAL"
    )


def cli_driver(
    instance: dg.DagsterInstance, base_url: str, data_root: Path | str
) -> PipelineDriver:
    """The driver `batch-pipeline run --gateway URL --data-dir DIR` opens: this package's own
    location and instance, with those two overrides."""
    defs, name = load_pipeline()
    return PipelineDriver(
        defs, name, instance, gateway_url=base_url, data_root=str(data_root), log_level="CRITICAL"
    )


def record_submitted(drive: PipelineDriver, names: list[str]) -> None:
    """Record in Dagster that `names` were submitted, for batches made with the operations
    directly (as a submit run would have recorded them): the status sensor watches these."""
    drive.ensure_partitions(names)
    for name in names:
        drive.instance.report_runless_asset_event(
            dg.AssetMaterialization(drive.names.submitted_batches, partition=name)
        )


def submit(
    drive: PipelineDriver, name: str, config: dict[str, Any] | None = None, **batch_input: Any
) -> str | None:
    """Launch the submit job of one partition; None, or why it failed (one line)."""
    outcome = drive.submit(name, submit=config, batch_input=batch_input or None)
    return None if outcome.success else outcome.message


def collect(drive: PipelineDriver, name: str) -> str | None:
    """Launch the collect job of one partition; None, or why it failed or the invariant broke."""
    outcome = drive.execute(drive.names.collect_job, name)
    if not outcome.success:
        return outcome.message
    return None if outcome.checks.get(INVARIANT_CHECK) else "invariant check failed"


def tick(drive: PipelineDriver) -> Tick:
    """One evaluation of the status sensor, with the runs it requested executed."""
    return drive.tick(drive.names.status_sensor)


def tick_until(
    drive: PipelineDriver, predicate: Callable[[Tick], bool], timeout: float = 30.0
) -> Tick:
    """Tick the status sensor until `predicate` holds for a tick."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = tick(drive)
        if predicate(done):
            return done
        time.sleep(0.05)
    raise AssertionError("the status sensor never got there")


def poll_and_collect(
    drive: PipelineDriver,
    names: Iterable[str],
    *,
    timeout: float = 60.0,
    between_ticks: Callable[[int], None] | None = None,
) -> dict[str, str | None]:
    """Tick the status sensor (which runs each collect it asks for) until every name was
    collected once; name -> None (collected, invariant held) or why not."""
    waiting, outcomes = set(names), {}
    count = 0
    deadline = time.monotonic() + timeout
    while waiting:
        assert time.monotonic() < deadline, f"still waiting for {sorted(waiting)}"
        for run in tick(drive).runs:
            if run.job_name == drive.names.collect_job and run.partition in waiting:
                waiting.discard(run.partition)
                outcomes[run.partition] = (
                    (None if run.checks.get(INVARIANT_CHECK) else "invariant check failed")
                    if run.success
                    else run.message
                )
        count += 1
        if between_ticks is not None:
            between_ticks(count)
        if waiting:
            time.sleep(0.05)
    return outcomes


def run(drive: PipelineDriver, data_root: Path, names: Iterable[str], **kwargs: Any) -> RunSummary:
    """`batch-pipeline run` over inbox inputs (JSONL files, tables) of the given names (globs
    allowed)."""
    inbox = data_root / "inbox"
    files = sorted(p for n in names for x in (".jsonl*", ".parquet") for p in inbox.glob(n + x))
    kwargs.setdefault("timeout", 60.0)  # a stuck run fails the test instead of hanging it
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("progress", lambda _: None)
    return drive.run(files, **kwargs)
