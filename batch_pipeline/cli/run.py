"""Run the whole flow over FILE... in the foreground, through the same Dagster definitions.

Files are placed in the inbox, registered as partitions, submitted with the `submit_job` assets,
polled by evaluating `batch_status_sensor` itself until it asks for collect runs, and collected
with the collect assets; then a summary is printed. A Dagster instance at $DAGSTER_HOME is used
when set (so the runs show in the UI), else a temporary one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from batch_pipeline.cli import add_data_dir_argument
from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.ledger.layout import DataLayout, LayoutError, partition_name
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.ledger.storage import DataPath, copy_into, is_local, read_parquet

DEFAULT_GATEWAY = "http://localhost:8080"
# The foreground run prints its own progress; Dagster's per-event console log is for the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="input JSONL files (.jsonl, .jsonl.gz)"
    )
    parser.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help=f"Bifrost base URL (default: $BIFROST_BASE_URL, else {DEFAULT_GATEWAY}); "
        "the key comes from $BIFROST_API_KEY",
    )
    add_data_dir_argument(parser)
    parser.add_argument(
        "--on-invalid",
        choices=["reject", "skip"],
        default="reject",
        help="reject (default): a file with invalid lines is not submitted; "
        "skip: invalid lines become stage=input errors",
    )
    parser.add_argument("--default-provider", default="", help="provider for unprefixed models")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, metavar="SECONDS", help="status poll period"
    )
    parser.add_argument(
        "--timeout", type=float, default=24 * 3600.0, metavar="SECONDS", help="give up after this"
    )


def run(args: argparse.Namespace) -> int:
    gateway = args.gateway or os.environ.get("BIFROST_BASE_URL") or DEFAULT_GATEWAY
    try:
        summary = run_files(
            [Path(f) for f in args.files],
            gateway_url=gateway,
            data_dir=args.data_dir,
            on_invalid=args.on_invalid,
            default_provider=args.default_provider,
            poll_interval=args.poll_interval,
            timeout=args.timeout,
        )
    except RunError as exc:
        print(f"batch-pipeline run: {exc}", file=sys.stderr)
        return 1
    print(summary.render())
    return 0 if summary.ok else 1


class RunError(BatchPipelineError):
    """The run could not start or finish; one line says why."""


@dataclass
class FileOutcome:
    name: str
    ok: bool
    message: str = ""
    results: int = 0
    errors: int = 0
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    total_tokens: int = 0
    cost_usd: float = 0.0
    batches: int = 0


@dataclass
class RunSummary:
    data_dir: DataPath
    files: list[FileOutcome]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def render(self) -> str:
        lines = [
            f"{'file':<28} {'batches':>7} {'results':>8} {'errors':>7} {'tokens':>9} "
            f"{'cost USD':>10}  notes"
        ]
        for f in self.files:
            notes = f.message or ", ".join(f"{k}={v}" for k, v in sorted(f.errors_by_stage.items()))
            lines.append(
                f"{f.name:<28} {f.batches:>7} {f.results:>8} {f.errors:>7} {f.total_tokens:>9} "
                f"{f.cost_usd:>10.6f}  {notes}"
            )
        root = self.data_dir
        lines += [
            f"done in {self.seconds:.1f}s; every input line accounted for: {'yes' if self.ok else 'NO'}",
            f"results: {root / 'results'}   errors: {root / 'errors'}",
            'read them: python -c "import duckdb; print(duckdb.sql(\\"select input_file, count(*) '
            f"from read_parquet('{root}/results/*/*.parquet', hive_partitioning=true) "
            'group by all\\"))"',
        ]
        return "\n".join(lines)


def run_files(
    files: list[Path],
    *,
    gateway_url: str,
    data_dir: str | os.PathLike[str],
    on_invalid: str = "reject",
    default_provider: str = "",
    poll_interval: float = 1.0,
    timeout: float = 24 * 3600.0,
    progress=print,
) -> RunSummary:
    """Submit, poll and collect `files` to completion; returns what happened to each."""
    import dagster as dg

    from batch_pipeline.defs.assets import (
        batch_input,
        batch_outcomes,
        collected_batches,
        submitted_batches,
    )
    from batch_pipeline.defs.partitions import input_files
    from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
    from batch_pipeline.defs.sensors import batch_status_sensor

    started = time.monotonic()
    layout = DataLayout.at(data_dir)
    names = [_place_in_inbox(path, layout) for path in files]
    resources = {
        "gateway": GatewayResource(
            base_url=gateway_url,
            api_key=dg.EnvVar("BIFROST_API_KEY") if "BIFROST_API_KEY" in os.environ else "",
        ),
        "pipeline": PipelineSettings(
            data_root=str(layout.root), on_invalid=on_invalid, default_provider=default_provider
        ),
    }
    outcomes = {n: FileOutcome(n, ok=False) for n in names}
    with ExitStack() as stack:
        instance = _instance(stack)

        def materialize(assets: list, partition_key: str | None):
            """One in-process run of `assets` with this run's instance and resources."""
            return dg.materialize(
                assets,
                partition_key=partition_key,
                instance=instance,
                resources=resources,
                run_config=QUIET,
                raise_on_error=False,
            )

        instance.add_dynamic_partitions(input_files.name, names)
        waiting = []
        for name in names:
            result = materialize([batch_input, submitted_batches], name)
            if result.success:
                waiting.append(name)
                progress(f"{name}: submitted")
            else:
                outcomes[name].message = _failure_message(result)
                progress(f"{name}: not submitted: {outcomes[name].message}")

        cursor = None
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise RunError(f"timed out after {timeout:.0f}s waiting for {', '.join(waiting)}")
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            tick = batch_status_sensor(context)
            cursor = tick.cursor
            _print_progress(progress, layout, waiting)
            for request in tick.run_requests or []:
                # shards held by queue limits now fit: submit them (collect is decided below)
                if request.job_name == "submit_job" and request.partition_key in waiting:
                    materialize([batch_input, submitted_batches], request.partition_key)
            # Every file whose batches all ended is collected now, even one collected by an
            # earlier run (the sensor would skip it): a foreground run always ends in Parquet.
            for name in [n for n in waiting if _all_terminal(layout, n)]:
                result = materialize([collected_batches], name)
                waiting.remove(name)
                outcomes[name] = _collect_outcome(name, result, layout)
                if result.success:  # recorded: later status ticks skip this file
                    ManifestStore(layout.root / "batches").settle(name)
            if waiting:
                time.sleep(poll_interval)
        if any(o.ok for o in outcomes.values()):
            materialize([batch_outcomes], None)
    return RunSummary(layout.root, list(outcomes.values()), time.monotonic() - started)


def _place_in_inbox(path: Path, layout: DataLayout) -> str:
    """Copy a file into the inbox (unless it is there) and return its partition name."""
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    try:
        name = partition_name(path.name)
    except LayoutError as exc:
        raise RunError(str(exc)) from None
    target = layout.inbox / path.name
    if not is_local(target) or path.resolve() != target.resolve():
        copy_into(path, target)
    return name


def _instance(stack: ExitStack):
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        return stack.enter_context(dg.DagsterInstance.get())
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="batch-pipeline-"))
    return stack.enter_context(dg.DagsterInstance.local_temp(tmp))


def _failure_message(result) -> str:
    """The first failure's description, on one line."""
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.user_failure_data
            text = (error.description if error else None) or event.step_failure_data.error.message
            return " ".join(str(text).split())[:500]
    return "failed"


def _all_terminal(layout: DataLayout, name: str) -> bool:
    manifest = ManifestStore(layout.root / "batches").load(name)
    return manifest is not None and manifest.all_terminal


def _print_progress(progress, layout: DataLayout, waiting: list[str]) -> None:
    store = ManifestStore(layout.root / "batches")
    for name in waiting:
        manifest = store.load(name)
        if manifest is None:
            continue
        done = sum(1 for s in manifest.shards.values() if s.terminal)
        counts = {}
        for s in manifest.shards.values():
            for key, value in (s.request_counts or {}).items():
                counts[key] = counts.get(key, 0) + (value or 0)
        statuses = ",".join(sorted({s.status or "?" for s in manifest.shards.values()}))
        shown = " ".join(f"{k}={v}" for k, v in counts.items() if v)
        progress(f"{name}: {done}/{len(manifest.shards)} batches finished [{statuses}] {shown}")


def _collect_outcome(name: str, result, layout: DataLayout) -> FileOutcome:
    if not result.success:
        return FileOutcome(name, ok=False, message=_failure_message(result))
    from batch_pipeline.defs.assets import INVARIANT_CHECK

    checks = [c for c in result.get_asset_check_evaluations() if c.check_name == INVARIANT_CHECK]
    ok = bool(checks) and all(c.passed for c in checks)
    errors = read_parquet(layout.errors_file(name), columns=["stage"]).column(0).to_pylist()
    by_stage: dict[str, int] = {}
    for stage in errors:
        by_stage[stage] = by_stage.get(stage, 0) + 1
    results = read_parquet(layout.results_file(name), columns=["total_tokens"]).column(0)
    manifest = ManifestStore(layout.root / "batches").load(name)
    cost = sum(
        event.materialization.metadata["cost_usd"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "batch_results"
    )
    return FileOutcome(
        name,
        ok=ok,
        message="" if ok else "invariant check failed",
        results=len(results),
        errors=len(errors),
        errors_by_stage=by_stage,
        total_tokens=sum(t or 0 for t in results.to_pylist()),
        cost_usd=cost,
        batches=len(manifest.shards) if manifest else 0,
    )
