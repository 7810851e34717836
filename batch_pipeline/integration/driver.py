"""Drive one pipeline instance of loaded definitions in the foreground, as the daemon would.

The driver owns no pipeline decision: it evaluates the instance's sensors through Dagster,
records what they report (partitions, observations, check evaluations), and executes the runs
they request, with their tags and run keys, on a Dagster instance (the one in $DAGSTER_HOME, or
an ephemeral one). `batch-pipeline run/demo/retry/cancel` and the tests use it; `--gateway` and
`--data-dir` become overrides of the instance's two resources, nothing else.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.definitions.job_base import RepoBackedJob
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.execution.execute_in_process import core_execute_in_process, merge_run_tags
from dagster._core.instance.ref import InstanceRef
from dagster._core.instance.types import CachingDynamicPartitionsLoader
from dagster._record import replace

from batch_pipeline.errors import EXIT_CODES, EXIT_FAILED, PipelineError
from batch_pipeline.inputs.template import load_template
from batch_pipeline.integration.assets import INPUT_POLICY_KEY, INVARIANT_CHECK
from batch_pipeline.integration.names import SUBMISSION_TAG, PipelineNames
from batch_pipeline.integration.readback import read_back_command
from batch_pipeline.integration.resources import DataRootResource, GatewayResource
from batch_pipeline.ledger.layout import DataLayout, is_table, partition_name
from batch_pipeline.ledger.registry import InputRefused, InputRegistry, fingerprint, version_of
from batch_pipeline.ledger.storage import DataPath, copy_into, is_local

MESSAGE_CHARS = 500
_RUN_KEY_TAG, _SENSOR_TAG = "dagster/run_key", "dagster/sensor_name"
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
_NO_TELEMETRY = {"telemetry": {"enabled": False}}


class _SensorContext(dg.SensorEvaluationContext):
    """Dagster's sensor context, on an instance that may be ephemeral: Dagster resolves a run
    request for a partition added in the same tick only through an instance with a ref, which
    an in-memory instance lacks; the loader itself needs no more than the instance."""

    @functools.cached_property
    def caching_dynamic_partitions_loader(self) -> CachingDynamicPartitionsLoader:
        return CachingDynamicPartitionsLoader(self.instance)


@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """The instance in $DAGSTER_HOME (runs show in the UI), else an ephemeral one in memory;
    telemetry off unless the home's dagster.yaml turns it on (a command prints no banner)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        with dg.DagsterInstance.ephemeral(settings=_NO_TELEMETRY) as instance:
            yield instance
        return
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    chosen = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    overrides = None if "telemetry" in chosen else _NO_TELEMETRY
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=overrides)) as instance:
        yield instance


@dataclass
class RunOutcome:
    """What one run did, read back from the instance's event log."""

    run_id: str
    job_name: str
    partition: str | None
    success: bool
    message: str = ""
    cause: str = ""  # the kind of a failure's cause (errors.cause_of), when the step knew it
    materializations: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> metadata
    checks: dict[str, bool] = field(default_factory=dict)  # check name -> passed
    outputs: dict[str, Any] = field(default_factory=dict)  # op output metadata, merged


@dataclass
class Tick:
    """One sensor evaluation: what it reported and the runs it led to."""

    events: list[Any] = field(default_factory=list)
    runs: list[RunOutcome] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class FileOutcome:
    name: str
    ok: bool
    message: str = ""
    cause: str = ""
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
    waited: float = 0.0  # of `seconds`, asleep between status polls (waiting on the gateway)

    log_file: Path | None = None  # where Dagster's event log of these runs went

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def exit_code(self) -> int:
        """0 when every file went through; else the code of the first failure's cause."""
        failed = [f for f in self.files if not f.ok]
        return EXIT_CODES.get(failed[0].cause, EXIT_FAILED) if failed else 0

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
            f"done in {self.seconds:.1f}s ({self.waited:.0f}s of it waiting between status "
            f"polls); every input line accounted for: {'yes' if self.ok else 'NO'}",
            f"results: {root / 'results'}   errors: {root / 'errors'}",
            f"read them: {read_back_command(root)}",
        ]
        if self.log_file is not None:
            lines.append(f"Dagster's event log of these runs: {self.log_file}")
        return "\n".join(lines)


class PipelineDriver:
    """Sensors evaluated, runs executed in this process, for instance `pipeline` of `defs`."""

    def __init__(
        self,
        defs: dg.Definitions,
        pipeline: str,
        instance: dg.DagsterInstance,
        *,
        gateway_url: str | None = None,
        data_root: str | None = None,
        log_level: str = "WARNING",
        log_file: Path | None = None,
    ) -> None:
        self.names = PipelineNames(pipeline)
        self.log_file = log_file  # each run's event log is appended here, when given
        self.instance = instance
        self._defs = defs
        self.resources = dict(defs.resources or {})
        gateway = self.resources.get(self.names.gateway_resource)
        data = self.resources.get(self.names.data_resource)
        if not isinstance(gateway, GatewayResource) or not isinstance(data, DataRootResource):
            raise PipelineError(f"{pipeline}: its gateway and data resources are missing")
        self.override(gateway_url=gateway_url, data_root=data_root)
        self.logging = {"loggers": {"console": {"config": {"log_level": log_level}}}}
        self._cursors: dict[str, str | None] = {}

    def override(self, *, gateway_url: str | None = None, data_root: str | None = None) -> None:
        """Use another gateway URL or data root from now on (the two settings the command line
        may override), in sensor ticks and runs alike."""
        if gateway_url:
            self.resources[self.names.gateway_resource] = self.gateway.with_base_url(gateway_url)
        if data_root:
            self.resources[self.names.data_resource] = self.data.with_root(str(data_root))
        # the code location as a run worker loads it, with the overrides
        self.repo = replace(self._defs, resources=self.resources).get_repository_def()

    @property
    def data(self) -> DataRootResource:
        return self.resources[self.names.data_resource]

    @property
    def gateway(self) -> GatewayResource:
        return self.resources[self.names.gateway_resource]

    @property
    def layout(self) -> DataLayout:
        return self.data.layout()

    def op_name(self, key: dg.AssetKey) -> str:
        """The op that materializes `key` (run config is keyed by op)."""
        return self.repo.assets_defs_by_key[key].node_def.name

    # ------------------------------------------------------------------------- partitions, files

    def ensure_partitions(self, partitions: Iterable[str]) -> None:
        """Register partitions this instance does not know yet (as the inbox sensor would)."""
        pdef = self.names.partitions
        new = [p for p in partitions if not self.instance.has_dynamic_partition(pdef, p)]
        if new:
            self.instance.add_dynamic_partitions(pdef, new)

    def place(
        self, path: Path, template: Path | None = None, *, resubmit: bool | None = None
    ) -> str:
        """Copy an input (a file, or a table's folder) into the inbox unless it is there, with
        `template` as the table's own template beside it; returns its partition name. Decided
        before the inbox is touched, as the registry would at registration: the same content
        under its registered name is not copied again, new content under a used name is refused
        (or, with inputs.on_name_reuse: version, becomes the name's next version), content
        registered under another name is refused unless `resubmit` (default: the instance's
        inputs.on_duplicate)."""
        if not (path.is_file() or (is_table(path) and path.is_dir())):
            raise PipelineError(f"{path}: no such file")
        name = partition_name(path.name)
        policy = self.input_policy()
        if resubmit is None:
            resubmit = policy.get("on_duplicate") == "resubmit"
        registry = InputRegistry(self.layout)
        name = registry.latest(
            name, set(self.instance.get_dynamic_partitions(self.names.partitions))
        )
        try:
            same = registry.check_new(name, path.name, fingerprint(path), allow_duplicate=resubmit)
        except InputRefused:
            record = registry.record(name)
            if not (
                policy.get("on_name_reuse") == "version" and record and record.file == path.name
            ):
                raise
            name, same = f"{version_of(name)[0]}.v{record.version + 1}", None
        target = self.layout.inbox / path.name
        local = is_local(target) and path.resolve() == Path(target).resolve()
        if same is None and not local:
            copy_into(path, target)
        if template is not None and is_table(path):
            load_template(template)  # a template that cannot be used stops here, in one line
            copy_into(template, self.layout.template_file(name))
        return name

    def input_policy(self) -> dict[str, Any]:
        """The instance's input settings, as its inbox asset publishes them."""
        spec = self.repo.assets_defs_by_key[self.names.inbox].specs_by_key[self.names.inbox]
        value = spec.metadata.get(INPUT_POLICY_KEY)
        return dict(getattr(value, "value", value) or {})

    # --------------------------------------------------------------------------------- runs

    def execute(
        self,
        job_name: str,
        partition: str | None = None,
        *,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunOutcome:
        """Execute one run of a job of the instance in this process; never raises for a run
        that fails (the outcome says why).

        The run is executed as a run worker executes it: the job taken from the code location
        (so a step sees the repository, e.g. to load an upstream asset through its IO manager),
        which Dagster's public `execute_in_process` does not offer."""
        if partition is not None:
            self.ensure_partitions([partition])
        config = {**self.logging, **(run_config or {})}
        job = self.repo.get_job(job_name)
        run_tags = merge_run_tags(
            job_def=job,
            partition_key=partition,
            tags=tags,
            asset_selection=None,
            instance=self.instance,
            run_config=config,
        )
        result = core_execute_in_process(
            run_config=config,
            job=RepoBackedJob(job_name, self.repo),
            instance=self.instance,
            output_capturing_enabled=False,
            raise_on_error=False,
            run_tags=run_tags,
        )
        if self.log_file is not None:
            self._append_event_log(result.run_id, self.log_file)
        return self.outcome(result.run_id)

    def _append_event_log(self, run_id: str, path: Path) -> None:
        """Dagster's event log of a run, stack traces included, as lines of the log file."""
        with open(path, "a", encoding="utf-8") as log:
            for entry in self.instance.all_logs(run_id):
                stamp = datetime.fromtimestamp(entry.timestamp, UTC).isoformat(
                    timespec="milliseconds"
                )
                where = " ".join(p for p in (entry.job_name, run_id[:8], entry.step_key) if p)
                level = logging.getLevelName(entry.level)
                log.write(f"{stamp} {level} [{where}] {entry.message}\n")
                error = _event_error(entry.dagster_event)
                if error:
                    log.write(error.rstrip() + "\n")

    def outcome(self, run_id: str) -> RunOutcome:
        """A run's outcome from the event log (whoever executed it)."""
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            raise PipelineError(f"no run {run_id}")
        outcome = RunOutcome(
            run_id,
            run.job_name,
            run.tags.get("dagster/partition"),
            run.status == dg.DagsterRunStatus.SUCCESS,
        )
        for record in self.instance.get_records_for_run(run_id).records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.is_step_materialization:
                materialization = event.step_materialization_data.materialization
                outcome.materializations[materialization.asset_key.to_user_string()] = {
                    k: v.value for k, v in materialization.metadata.items()
                }
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                outcome.checks[evaluation.check_name] = evaluation.passed
            elif event.is_successful_output:
                outcome.outputs.update(
                    {k: v.value for k, v in event.step_output_data.metadata.items()}
                )
            elif event.is_step_failure and not outcome.message:
                outcome.message = _failure_message(event)
                outcome.cause = _failure_cause(event)
            elif event.is_run_failure and not outcome.message:
                outcome.message = _one_line(event.message or "the run failed")
        if not outcome.success and not outcome.message:
            outcome.message = f"run {run.status.value.lower()}"
        return outcome

    # ------------------------------------------------------------------------------- sensors

    def evaluate(self, sensor_name: str) -> SensorExecutionData:
        """Evaluate a sensor once through Dagster and keep the cursor it returns, as the daemon
        does; nothing it asks for is done yet (`tick` does it)."""
        with _SensorContext(
            instance_ref=None,
            instance=self.instance,
            repository_def=self.repo,
            repository_name=self.repo.name,
            resources=self.resources,
            sensor_name=sensor_name,
            cursor=self._cursors.get(sensor_name),
        ) as context:
            data = self.repo.get_sensor_def(sensor_name).evaluate_tick(context)
        if data.cursor is not None:
            self._cursors[sensor_name] = data.cursor
        return data

    def tick(self, sensor_name: str) -> Tick:
        """Evaluate a sensor once as the daemon does: add the partitions it asks for, record
        the events it reports, execute each run it requests unless its run key was used."""
        sensor = self.repo.get_sensor_def(sensor_name)
        data = self.evaluate(sensor_name)
        for change in data.dynamic_partitions_requests or []:
            if isinstance(change, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(
                    change.partitions_def_name, list(change.partition_keys)
                )
            else:
                for key in change.partition_keys:
                    self.instance.delete_dynamic_partition(change.partitions_def_name, key)
        tick = Tick(events=list(data.asset_events or []), skipped=data.skip_message)
        for event in tick.events:
            self.instance.report_runless_asset_event(event)
        for request in data.run_requests or []:
            tags = {**(request.tags or {}), _SENSOR_TAG: sensor_name}
            if request.run_key:
                if self._run_key_used(sensor_name, request.run_key):
                    continue
                tags[_RUN_KEY_TAG] = request.run_key
            job_name = request.job_name or sensor.job_name
            assert job_name is not None  # a sensor with several jobs names one per request
            tick.runs.append(
                self.execute(
                    job_name, request.partition_key, run_config=request.run_config, tags=tags
                )
            )
        return tick

    def _run_key_used(self, sensor_name: str, run_key: str) -> bool:
        runs = self.instance.get_runs(
            dg.RunsFilter(tags={_SENSOR_TAG: sensor_name, _RUN_KEY_TAG: run_key}), limit=1
        )
        return bool(runs)

    # -------------------------------------------------------------------------- the whole flow

    def submit(
        self,
        name: str,
        *,
        batch_input: Mapping[str, Any] | None = None,
        submit: Mapping[str, Any] | None = None,
    ) -> RunOutcome:
        """Launch the submit job for one partition, with per-run config of its two assets."""
        ops = {}
        if batch_input:
            ops[self.op_name(self.names.batch_input)] = {"config": dict(batch_input)}
        if submit:
            ops[self.op_name(self.names.submitted_batches)] = {"config": dict(submit)}
        return self.execute(self.names.submit_job, name, run_config={"ops": ops} if ops else None)

    def run(
        self,
        files: Iterable[Path],
        *,
        batch_input: Mapping[str, Any] | None = None,
        template: Path | None = None,
        poll_interval: float = 1.0,
        timeout: float = 24 * 3600.0,
        progress: Callable[[str], None] = print,
        watch: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> RunSummary:
        """Submit `files` (tables with `template`, if given), then tick the status sensor
        (executing what it requests) until each file's latest submission was collected; a
        summary of every file. `progress` gets a line per step of a file; `watch`, when given,
        gets each status observation's metadata instead of its line (for a progress bar)."""
        started = time.monotonic()
        resubmit = (batch_input or {}).get("resubmit")
        names = [self.place(Path(f), template, resubmit=resubmit) for f in files]
        self.ensure_partitions(names)
        outcomes: dict[str, FileOutcome] = {}
        waiting: list[str] = []
        for name in names:
            submitted = self.submit(name, batch_input=batch_input)
            if submitted.success:
                waiting.append(name)
                progress(f"{name}: submitted")
            else:
                outcomes[name] = FileOutcome(
                    name,
                    ok=False,
                    message=submitted.message,
                    cause=submitted.cause,
                    batches=self._batches_made(name),
                )
                progress(f"{name}: not submitted: {submitted.message}")
        deadline = time.monotonic() + timeout
        waited = 0.0
        while waiting:
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"timed out after {timeout:.0f}s waiting for {', '.join(waiting)}"
                )
            tick = self.tick(self.names.status_sensor)
            for event in tick.events:
                if isinstance(event, dg.AssetObservation) and event.partition in waiting:
                    if watch is None:
                        progress(f"{event.partition}: {_progress_line(event)}")
                    else:
                        watch(event.partition, {k: v.value for k, v in event.metadata.items()})
            for name in list(waiting):
                collect = self._finished_collect(name)
                if collect is not None:
                    waiting.remove(name)
                    outcomes[name] = self._file_outcome(name, collect)
            if waiting:
                time.sleep(poll_interval)
                waited += poll_interval
        return RunSummary(
            self.layout.root,
            [outcomes[n] for n in names],
            time.monotonic() - started,
            waited,
            self.log_file,
        )

    def submission(self, name: str) -> int | None:
        """The event log's id of `name`'s latest submission (collect runs are tagged with it)."""
        return self.instance.event_log_storage.get_latest_storage_id_by_partition(
            self.names.submitted_batches, dg.DagsterEventType.ASSET_MATERIALIZATION
        ).get(name)

    def _finished_collect(self, name: str) -> RunOutcome | None:
        """The finished collect run of `name`'s latest submission, whoever executed it."""
        latest = self.submission(name)
        runs = self.instance.get_runs(
            dg.RunsFilter(
                job_name=self.names.collect_job,
                statuses=_FINISHED,
                tags={"dagster/partition": name, SUBMISSION_TAG: str(latest)},
            ),
            limit=1,
        )
        return self.outcome(runs[0].run_id) if runs else None

    def _file_outcome(self, name: str, collect: RunOutcome) -> FileOutcome:
        results = collect.materializations.get(self.names.batch_results.to_user_string())
        errors = collect.materializations.get(self.names.batch_errors.to_user_string())
        if results is None or errors is None:
            return FileOutcome(
                name,
                ok=False,
                message=collect.message or "not collected",
                cause=collect.cause,
                batches=self._batches_made(name),
            )
        ok = collect.checks.get(INVARIANT_CHECK, False)
        return FileOutcome(
            name,
            ok=ok,
            message="" if ok else collect.message or "invariant check failed",
            results=int(results["dagster/row_count"]),
            errors=int(errors["dagster/row_count"]),
            errors_by_stage=dict(errors.get("errors_by_stage") or {}),
            total_tokens=int(results.get("total_tokens") or 0),
            cost_usd=float(results.get("cost_usd") or 0.0),
            batches=len(results.get("batch_ids") or []),
        )

    def _batches_made(self, name: str) -> int:
        """How many batches the gateway holds for `name`, as its manifest records them (what a
        failed run still paid for)."""
        manifest = self.data.store().load(name)
        return len(manifest.batch_ids) if manifest else 0


def _progress_line(event: dg.AssetObservation) -> str:
    meta: dict[str, Any] = {k: v.value for k, v in event.metadata.items()}
    statuses = ",".join(sorted(meta.get("statuses") or {}))
    return (
        f"{meta.get('batches_finished')}/{meta.get('batches_total')} batches finished "
        f"[{statuses}] succeeded={meta.get('requests_succeeded')} "
        f"failed={meta.get('requests_failed')}"
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:MESSAGE_CHARS]


def _failure_message(event: Any) -> str:
    """A step failure as its user should read it: the Failure's description, else the error the
    step raised (Dagster wraps it; the cause is the user's)."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return _one_line(data.user_failure_data.description)
    error = data.error
    while (
        error is not None
        and error.cause is not None
        and (error.cls_name or "").startswith("Dagster")
    ):
        error = error.cause
    return _one_line(error.message if error is not None else "the step failed")


def _failure_cause(event: Any) -> str:
    """The cause kind a step's Failure carries in its metadata (see assets.failure), if any."""
    data = event.step_failure_data.user_failure_data
    value = data.metadata.get("cause") if data is not None else None
    return str(value.value) if value is not None else ""


def _event_error(event: Any) -> str:
    """The error (with its stack) a failure event carries, for the log file."""
    if event is None:
        return ""
    if event.is_step_failure and event.step_failure_data.error is not None:
        return event.step_failure_data.error.to_string()
    data = getattr(event, "event_specific_data", None)
    error = getattr(data, "error", None)
    return error.to_string() if error is not None else ""
