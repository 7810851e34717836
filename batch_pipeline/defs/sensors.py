"""Sensors: the inbox (new file -> partition + submit run) and batch status (poll -> collect run)."""

import json
import os
import time

import dagster as dg

from batch_pipeline.defs.checks import RETENTION_CHECK, STUCK_CHECK, finding_evaluation
from batch_pipeline.defs.jobs import collect_job, outcomes_job, submit_job
from batch_pipeline.defs.partitions import input_files
from batch_pipeline.defs.resources import GatewayResource, PipelineSettings
from batch_pipeline.gateway import GatewayError
from batch_pipeline.operations.alerts import Finding, retention_risk, stuck_batches
from batch_pipeline.operations.poll import PollReport, poll_in_flight
from batch_pipeline.operations.queue_limits import QueueGate

# Time a status tick may spend polling; Dagster stops a sensor evaluation at 60 s.
TICK_BUDGET_SECONDS = 30.0

# Inbox files looked at per tick (one S3 list page): the cursor walks a large inbox in pages,
# so every file is seen within ceil(files / INBOX_PAGE) ticks, never with a full listing.
INBOX_PAGE = 1000
MAX_TOLD = 500  # refusals remembered so each is logged once

# Submitting costs money, so the inbox sensor starts stopped unless asked for (make ui does).
_AUTOSUBMIT = os.environ.get("BATCH_PIPELINE_AUTOSUBMIT", "") == "1"


def _interval(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dg.sensor(
    job=submit_job,
    minimum_interval_seconds=_interval("BATCH_PIPELINE_INBOX_INTERVAL", 30),
    default_status=dg.DefaultSensorStatus.RUNNING
    if _AUTOSUBMIT
    else dg.DefaultSensorStatus.STOPPED,
    description="New files in data/inbox/ become partitions and get a submit run.",
)
def inbox_sensor(
    context: dg.SensorEvaluationContext, pipeline: PipelineSettings
) -> dg.SensorResult:
    known = set(context.instance.get_dynamic_partitions(input_files.name))
    cursor = json.loads(context.cursor or "{}")
    if isinstance(cursor, list):  # the cursor of earlier versions: refusals only
        cursor = {"told": cursor}
    page = pipeline.layout().scan_inbox(
        known,
        settle_seconds=pipeline.inbox_settle_seconds,
        now=time.time(),
        after=cursor.get("after"),
        limit=INBOX_PAGE,
    )
    told = cursor.get("told", [])
    for message in page.refused:
        if message not in told:
            context.log.warning(f"inbox: {message}")
            told.append(message)
    next_cursor = json.dumps({"after": page.next_after, "told": told[-MAX_TOLD:]})
    if not page.new:
        return dg.SensorResult(skip_reason="no new input files", cursor=next_cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=[input_files.build_add_request(page.new)],
        run_requests=[dg.RunRequest(partition_key=n, run_key=f"submit:{n}") for n in page.new],
        cursor=next_cursor,
    )


@dg.sensor(
    jobs=[collect_job, submit_job],
    minimum_interval_seconds=_interval("BATCH_PIPELINE_STATUS_INTERVAL", 30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls in-flight batches (bounded per tick, round-robin), records their "
    "progress as observations, requests one collect run per file once all its batches "
    "are terminal (again after a failed one, up to max_collect_attempts), asks for another "
    "submit run when batches finish and shards wait on queue limits, and reports the stuck "
    "and retention checks.",
)
def batch_status_sensor(
    context: dg.SensorEvaluationContext, gateway: GatewayResource, pipeline: PipelineSettings
) -> dg.SensorResult:
    cursor = json.loads(context.cursor or "{}")
    try:
        # short retries and timeouts: a slow gateway must not hold a tick past Dagster's 60 s
        with gateway.client(max_retry_seconds=5.0, read_timeout=10.0) as client:
            report = poll_in_flight(
                client,
                pipeline.store(),
                max_batches=pipeline.max_polls_per_tick,
                offset=cursor.get("offset", 0),
                deadline_seconds=TICK_BUDGET_SECONDS,
            )
    except GatewayError as exc:
        return dg.SensorResult(skip_reason=f"gateway unavailable: {exc}", cursor=context.cursor)
    for problem in report.problems[:20]:
        context.log.warning(problem)

    def known(name: str) -> bool:
        return context.instance.has_dynamic_partition(input_files.name, name)

    observations = [
        dg.AssetObservation(
            asset_key="submitted_batches",
            partition=name,
            metadata={
                "batches": dg.MetadataValue.json(
                    {v.id: {"status": v.status, **v.counts.model_dump()} for v in views}
                )
            },
        )
        for name, views in report.updated.items()
        if known(name)
    ]
    run_requests = _collect_requests(
        context,
        [n for n in report.ready if known(n)],
        pipeline.max_collect_attempts,
        pipeline.store().settle,
    )
    # Shards held back by queue limits get another submit run once one of them fits.
    gate = QueueGate(report.manifests.values(), pipeline.max_enqueued_tokens)
    run_requests += [
        dg.RunRequest(
            job_name=submit_job.name,
            partition_key=name,
            run_key=f"submit-waiting:{name}:{report.finished_batches}",
        )
        for name in report.waiting
        if known(name) and any(gate.admit(s) is None for s in report.manifests[name].waiting)
    ]
    alerts, failing = _alert_evaluations(report, pipeline, cursor.get("failing", {}), known)
    events = [*observations, *alerts]
    return dg.SensorResult(
        run_requests=run_requests,
        asset_events=events,
        cursor=json.dumps({"offset": report.next_offset, "failing": failing}),
        skip_reason=None
        if run_requests or events
        else f"{report.in_flight} batches in flight, {report.polled} polled, none changed",
    )


def _alert_evaluations(
    report: PollReport, pipeline: PipelineSettings, failing: dict[str, list[str]], known
) -> tuple[list[dg.AssetCheckEvaluation], dict[str, list[str]]]:
    """Stuck and retention findings, reported only when a file's verdict changes."""
    now = time.time()
    layout = pipeline.layout()
    findings = {}
    for name, manifest in report.manifests.items():
        if not known(name):
            continue
        findings[(STUCK_CHECK, name)] = stuck_batches(
            manifest, now=now, grace_seconds=pipeline.stuck_grace_hours * 3600
        )
        findings[(RETENTION_CHECK, name)] = retention_risk(
            manifest,
            now=now,
            margin_days=pipeline.retention_margin_days,
            collected=layout.results_file(name).exists(),
        )
    before = {(check, name) for check, names in failing.items() for name in names}
    for check, name in before - findings.keys():  # settled since (or its manifest is gone)
        if known(name):
            findings[(check, name)] = Finding(True, "no longer watched: collected, or gone")
    evaluations = [
        finding_evaluation(name, check, finding)
        for (check, name), finding in findings.items()
        if (not finding.passed) != ((check, name) in before)
    ]
    now_failing: dict[str, list[str]] = {}
    for (check, name), finding in sorted(findings.items()):
        if not finding.passed:
            now_failing.setdefault(check, []).append(name)
    return evaluations, now_failing


def _collect_requests(
    context: dg.SensorEvaluationContext, ready: list[str], max_attempts: int, settle
) -> list[dg.RunRequest]:
    """One collect run per ready file not yet collected; after a failed one, one more. A ready
    file whose collect Dagster recorded is settled here: later ticks skip its manifest (settled
    only then, so a collect run that dies is still asked for again)."""
    if not ready:
        return []
    status = (
        context.instance.get_status_by_partition(dg.AssetKey("batch_results"), ready, input_files)
        or {}
    )
    requests = []
    for name in ready:
        state = status.get(name)
        if state == dg.AssetPartitionStatus.MATERIALIZED:
            settle(name)
            continue
        if state == dg.AssetPartitionStatus.IN_PROGRESS:
            continue
        # a run key is used once ever, so each failed or cancelled collect earns a new one
        failed = context.instance.get_runs_count(
            dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
                tags={"dagster/partition": name, **collect_job.tags},
            )
        )
        if failed >= max_attempts:
            context.log.warning(f"{name}: collect failed {failed} times; launch it by hand")
            continue
        requests.append(
            dg.RunRequest(
                job_name=collect_job.name, partition_key=name, run_key=f"collect:{name}:{failed}"
            )
        )
    return requests


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[collect_job],
    request_job=outcomes_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds the outcomes view after every successful collect.",
)
def outcomes_after_collect(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"outcomes:{context.dagster_run.run_id}")
