"""The sensors of one instance: the inbox (new file -> partition + submit run) and batch status
(poll -> progress observations, alerts, collect and submit runs). Sensors read; runs write."""

import json
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from batch_pipeline.gateway import GatewayError
from batch_pipeline.integration.assets import relative
from batch_pipeline.integration.checks import RETENTION_CHECK, STUCK_CHECK
from batch_pipeline.integration.jobs import PipelineJobs
from batch_pipeline.integration.names import SUBMISSION_TAG, PipelineNames
from batch_pipeline.integration.progress import uncollected_submissions
from batch_pipeline.integration.resources import DataRootResource, GatewayResource
from batch_pipeline.integration.settings import PipelineSettings
from batch_pipeline.ledger.layout import DataLayout, InboxEntry
from batch_pipeline.ledger.manifest import Manifest
from batch_pipeline.ledger.registry import InputRegistry, fingerprint, version_of
from batch_pipeline.operations.alerts import Finding, retention_risk, stuck_batches
from batch_pipeline.operations.poll import (
    BatchState,
    FileProgress,
    file_progress,
    in_flight_batches,
    poll_batches,
    with_states,
)
from batch_pipeline.operations.queue_limits import QueueGate

# A status tick ends within this many seconds whatever the gateway's latency (Dagster stops a
# sensor evaluation at 60 s): its status calls stop at the budget less the time kept for the rest
# of the tick (judging, and the daemon storing what the tick returns); calls still out then are
# abandoned. Each tick reports at most OBSERVATIONS_PER_TICK files' progress (round-robin, the
# rest next tick): the daemon stores each as an event, which takes time the reserve must cover.
TICK_BUDGET_SECONDS, TICK_RESERVE_SECONDS = 30.0, 10.0
OBSERVATIONS_PER_TICK = 50
# A tick's gateway calls retry briefly; each call's timeouts are cut to the time left.
TICK_RETRY_SECONDS = 5.0
# Inbox files looked at per tick (one S3 list page): the cursor walks a large inbox in pages,
# so every file is seen within ceil(files / INBOX_PAGE) ticks, never with a full listing.
INBOX_PAGE = 1000
# An inbox file changed this little before the previous pass began is looked at again (mtimes
# and listing times are not exact).
CHANGE_MARGIN_SECONDS = 5.0
MAX_TOLD = 500  # refusals remembered so each is logged once
PROBLEMS_LOGGED = 20
SENSOR_STATUS = {True: dg.DefaultSensorStatus.RUNNING, False: dg.DefaultSensorStatus.STOPPED}


def build_inbox_sensor(
    settings: PipelineSettings,
    names: PipelineNames,
    partitions: dg.DynamicPartitionsDefinition,
    jobs: PipelineJobs,
) -> dg.SensorDefinition:
    """New files in the inbox become partitions and get a submit run."""
    data_key = names.data_resource

    @dg.sensor(
        name=names.inbox_sensor,
        job=jobs.submit,
        minimum_interval_seconds=settings.sensors.inbox.interval_seconds,
        default_status=SENSOR_STATUS[settings.sensors.inbox.running],
        required_resource_keys={data_key},
        description="New files in <data_root>/inbox/ become partitions and get a submit run "
        "(stopped by default: submitting costs money).",
    )
    def inbox_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        data: DataRootResource = getattr(context.resources, data_key)
        layout, now = data.layout(), time.time()
        known = set(context.instance.get_dynamic_partitions(names.partitions))
        cursor = json.loads(context.cursor or "{}")
        page = layout.scan_inbox(
            known,
            settle_seconds=settings.inputs.settle_seconds,
            now=now,
            after=cursor.get("after"),
            limit=INBOX_PAGE,
            ready=settings.inputs.complete_when,
        )
        # A pass walks the whole inbox; files of known names changed since the previous pass
        # began are looked at again, so new content under a used name is never ignored.
        since, started = (
            (cursor.get("since", 0.0), cursor.get("started", now))
            if cursor.get("after")
            else (cursor.get("started", 0.0), now)
        )
        reused = _reused_names(settings, layout, page.known, known, since)
        told = cursor.get("told", [])
        for message in page.refused + reused.refused:
            if message not in told:
                context.log.warning(f"inbox: {message}")
                told.append(message)
        next_cursor = json.dumps(
            {"after": page.next_after, "told": told[-MAX_TOLD:], "since": since, "started": started}
        )
        new = page.new + list(reused.versions)
        runs = [dg.RunRequest(partition_key=n, run_key=f"submit:{n}") for n in new]
        runs += [
            dg.RunRequest(partition_key=key, run_key=f"name-reuse:{key}:{sha256}")
            for key, sha256 in reused.refusals.items()
        ]
        if not runs:
            return dg.SensorResult(skip_reason="no new input files", cursor=next_cursor)
        files = {**page.files, **reused.versions}
        return dg.SensorResult(
            dynamic_partitions_requests=[partitions.build_add_request(new)] if new else [],
            run_requests=runs,
            asset_events=[
                dg.AssetMaterialization(
                    names.inbox,
                    partition=n,
                    metadata={
                        "path": dg.MetadataValue.path(relative(layout, layout.inbox / files[n])),
                        "original_file": files[n],
                    },
                )
                for n in new
            ],
            cursor=next_cursor,
        )

    return inbox_sensor


@dataclass
class NameReuse:
    """Known names whose inbox file now holds new content: new versions to take (key -> file
    name), names whose run refuses it (key -> the new content's sha256), and one-line notes."""

    versions: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def _reused_names(
    settings: PipelineSettings,
    layout: DataLayout,
    entries: list[InboxEntry],
    known: set[str],
    since: float,
) -> NameReuse:
    """What to do about inbox files of known names changed since `since`: read the latest
    version's record; a file whose time and name match it is what was taken; otherwise its
    content is hashed (a sensor reads) and new content becomes the name's next version, or a
    run of the name that refuses it (a run moves it to inbox/rejected/) and a line logged once."""
    registry, found = InputRegistry(layout), NameReuse()
    for entry in entries:
        if entry.changed < since - CHANGE_MARGIN_SECONDS:
            continue
        latest = registry.latest(entry.key, known)
        record = registry.record(latest)
        if record is None or (record.file, record.inbox_changed) == (entry.file, entry.changed):
            continue
        if record.file != entry.file:
            found.refused.append(
                f"{entry.file}: maps to input key {entry.key!r}, which {record.file} already "
                "holds; rename the file"
            )
            continue
        sha256 = fingerprint(layout.inbox / entry.file).sha256
        if sha256 == record.sha256:
            continue  # the same content again: nothing to do
        if settings.inputs.on_name_reuse == "version":
            base, _ = version_of(latest)
            found.versions[f"{base}.v{record.version + 1}"] = entry.file
            continue
        found.refused.append(
            f"{entry.file}: new content under the used name {latest!r} (sha256 {sha256[:12]}); "
            "refused, the original is kept (a run moves the file to inbox/rejected/ with the "
            "reason)"
        )
        found.refusals[latest] = sha256
    return found


@dataclass
class StatusCursor:
    """What the status sensor carries between ticks: where its round-robin stands, the batches
    the last tick asked for and got no answer about (asked for first), the latest state of each
    batch of the partitions it watches, the 404s it is waiting out, the progress it last
    reported per partition (and the last file reported, where the next report starts), and the
    alerts now failing."""

    offset: int = 0
    first: list[str] = field(default_factory=list)
    states: dict[str, BatchState] = field(default_factory=dict)
    missing_since: dict[str, float] = field(default_factory=dict)
    reported: dict[str, str] = field(default_factory=dict)
    reported_last: str = ""
    failing: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "StatusCursor":
        data: dict[str, Any] = json.loads(text or "{}")
        return cls(
            offset=int(data.get("offset", 0)),
            first=[str(b) for b in data.get("first", [])],
            states={k: BatchState.from_json(v) for k, v in data.get("states", {}).items()},
            missing_since=dict(data.get("missing_since", {})),
            reported=dict(data.get("reported", {})),
            reported_last=str(data.get("reported_last", "")),
            failing=dict(data.get("failing", {})),
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "offset": self.offset,
                "first": self.first,
                "states": {k: v.to_json() for k, v in self.states.items()},
                "missing_since": self.missing_since,
                "reported": self.reported,
                "reported_last": self.reported_last,
                "failing": self.failing,
            },
            separators=(",", ":"),
        )


def build_status_sensor(
    settings: PipelineSettings, names: PipelineNames, jobs: PipelineJobs
) -> dg.SensorDefinition:
    """Polls in-flight batches and asks for the runs that act on what it sees."""
    data_key, gateway_key = names.data_resource, names.gateway_resource

    @dg.sensor(
        name=names.status_sensor,
        jobs=[jobs.collect, jobs.submit, jobs.alerts],
        minimum_interval_seconds=settings.sensors.status.interval_seconds,
        default_status=SENSOR_STATUS[settings.sensors.status.running],
        required_resource_keys={data_key, gateway_key},
        description="Polls in-flight batches (bounded per tick, round-robin), reports their "
        "progress as observations, requests one collect run per file once all its batches "
        "ended (again after a failed one, up to collect.max_attempts), asks for another submit "
        "run when shards wait on queue limits and room frees up, and asks for the stuck and "
        "retention checks when a file's verdict changes. It writes nothing.",
    )
    def status_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        deadline = time.monotonic() + TICK_BUDGET_SECONDS - TICK_RESERVE_SECONDS
        data: DataRootResource = getattr(context.resources, data_key)
        gateway: GatewayResource = getattr(context.resources, gateway_key)
        cursor = StatusCursor.parse(context.cursor)
        store, layout, now = data.store(), data.layout(), time.time()
        submissions = uncollected_submissions(context.instance, names)
        manifests = {n: m for n in sorted(submissions) if (m := store.load(n)) is not None}
        refs = in_flight_batches(manifests.values(), cursor.states)
        try:
            with gateway.client(max_retry_seconds=TICK_RETRY_SECONDS) as client:
                report = poll_batches(
                    client,
                    refs,
                    max_batches=settings.sensors.max_polls_per_tick,
                    offset=cursor.offset,
                    first=cursor.first,
                    deadline=deadline,
                    missing_since=cursor.missing_since,
                    now=now,
                )
        except GatewayError as exc:  # e.g. a gateway URL that cannot be used
            return dg.SensorResult(skip_reason=f"gateway unavailable: {exc}", cursor=context.cursor)
        for problem in report.problems[:PROBLEMS_LOGGED]:
            context.log.warning(problem)

        states = {**cursor.states, **report.states}
        current = {n: with_states(m, states) for n, m in manifests.items()}
        progress = {n: file_progress(m) for n, m in current.items()}
        shown = _to_report(progress, cursor.reported, cursor.reported_last)
        observations = [_progress_observation(names, layout, progress[n]) for n in shown]
        run_requests = _collect_requests(
            context,
            names,
            jobs,
            settings,
            {n: submissions[n] for n, p in progress.items() if p.ready},
        )
        run_requests += _waiting_submit_requests(jobs, settings, current, progress)
        alerts, failing = _alert_requests(jobs, settings, current, cursor.failing, now)
        run_requests += alerts
        watched = {r.batch_id for m in current.values() for r in m.shards.values() if r.batch_id}
        next_cursor = StatusCursor(
            offset=report.next_offset,
            first=report.unanswered,
            states={k: v for k, v in states.items() if k in watched},
            missing_since={k: v for k, v in report.missing_since.items() if k in watched},
            reported={
                n: p.digest() if n in shown else cursor.reported[n]
                for n, p in progress.items()
                if n in shown or n in cursor.reported
            },
            reported_last=shown[-1] if shown else cursor.reported_last,
            failing=failing,
        )
        return dg.SensorResult(
            run_requests=run_requests,
            asset_events=observations,
            cursor=next_cursor.dump(),
            skip_reason=None
            if run_requests or observations
            else f"{report.in_flight} batches in flight, {report.polled} polled, none changed",
        )

    return status_sensor


def _to_report(progress: dict[str, FileProgress], reported: dict[str, str], last: str) -> list[str]:
    """The files whose progress changed since last reported, at most OBSERVATIONS_PER_TICK of
    them, in name order from the one after `last` (wrapping), so every file gets its turn."""
    changed = sorted(n for n, p in progress.items() if reported.get(n) != p.digest())
    after = [n for n in changed if n > last]
    return (after + [n for n in changed if n <= last])[:OBSERVATIONS_PER_TICK]


def _progress_observation(
    names: PipelineNames, layout: DataLayout, progress: FileProgress
) -> dg.AssetObservation:
    """Numbers Dagster plots over time on the asset's page, and a line a person reads."""
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(progress.statuses.items()))
    summary = (
        f"{progress.finished} of {progress.shards} batch(es) finished ({statuses}); "
        f"{progress.succeeded} of {progress.requests} requests succeeded, {progress.failed} failed."
    )
    return dg.AssetObservation(
        asset_key=names.submitted_batches,
        partition=progress.name,
        metadata={
            "requests_total": progress.requests,
            "requests_succeeded": progress.succeeded,
            "requests_failed": progress.failed,
            "batches_total": progress.shards,
            "batches_finished": progress.finished,
            "batches_waiting": progress.waiting,
            "statuses": dg.MetadataValue.json(progress.statuses),
            "summary": dg.MetadataValue.md(summary),
            "manifest": dg.MetadataValue.path(relative(layout, layout.manifest(progress.name))),
        },
    )


def _collect_requests(
    context: dg.SensorEvaluationContext,
    names: PipelineNames,
    jobs: PipelineJobs,
    settings: PipelineSettings,
    ready: dict[str, int],
) -> list[dg.RunRequest]:
    """One collect run per ready submission; after a failed or cancelled one, one more, up to
    collect.max_attempts. A run key is used once ever, so each retry earns a new one."""
    requests = []
    for name, submission in sorted(ready.items()):
        tags = {"dagster/partition": name, SUBMISSION_TAG: str(submission)}
        failed = context.instance.get_runs_count(
            dg.RunsFilter(
                job_name=jobs.collect.name,
                statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
                tags=tags,
            )
        )
        if failed >= settings.collect.max_attempts:
            context.log.warning(f"{name}: collect failed {failed} times; launch it by hand")
            continue
        requests.append(
            dg.RunRequest(
                job_name=jobs.collect.name,
                partition_key=name,
                run_key=f"collect:{name}:{submission}:{failed}",
                tags={SUBMISSION_TAG: str(submission)},
            )
        )
    return requests


def _waiting_submit_requests(
    jobs: PipelineJobs,
    settings: PipelineSettings,
    current: dict[str, Manifest],
    progress: dict[str, FileProgress],
) -> list[dg.RunRequest]:
    """Another submit run for a file whose shards wait on queue limits, once one would fit."""
    caps = settings.submit.max_enqueued_tokens
    if not caps:
        return []
    gate = QueueGate(current.values(), caps)
    finished = sum(p.finished for p in progress.values())
    return [
        dg.RunRequest(
            job_name=jobs.submit.name,
            partition_key=name,
            run_key=f"submit-waiting:{name}:{finished}",
        )
        for name, manifest in current.items()
        if any(gate.admit(s) is None for s in manifest.waiting)
    ]


def _alert_requests(
    jobs: PipelineJobs,
    settings: PipelineSettings,
    current: dict[str, Manifest],
    failing: dict[str, list[str]],
    now: float,
) -> tuple[list[dg.RunRequest], dict[str, list[str]]]:
    """A run of the stuck and retention checks for each file whose verdict changed (as this
    tick sees it; the run judges again from the gateway), and what fails now."""
    alerts = settings.alerts
    findings: dict[tuple[str, str], Finding] = {}
    for name, manifest in current.items():
        findings[(STUCK_CHECK, name)] = stuck_batches(
            manifest, now=now, grace_seconds=alerts.stuck_grace_hours * 3600
        )
        findings[(RETENTION_CHECK, name)] = retention_risk(
            manifest, now=now, margin_days=alerts.retention_margin_days, collected=False
        )
    before = {(check, name) for check, watched in failing.items() for name in watched}
    for check, name in before - findings.keys():  # collected since (or its manifest is gone)
        findings[(check, name)] = Finding(True, "no longer watched: collected, or gone")
    changed = sorted(
        {
            name
            for (check, name), f in findings.items()
            if (not f.passed) != ((check, name) in before)
        }
    )
    now_failing: dict[str, list[str]] = {}
    for (check, name), finding in sorted(findings.items()):
        if not finding.passed:
            now_failing.setdefault(check, []).append(name)
    requests = [
        dg.RunRequest(job_name=jobs.alerts.name, partition_key=name, run_key=f"alerts:{name}:{now}")
        for name in changed
    ]
    return requests, now_failing
