"""The input layer's entry points: validate a file, prepare its shards, read a shard's index.

`prepare_input` writes everything into a private temporary directory (inside staging_dir on
local disk), then publishes each file in one step (a rename, or one PUT on S3): shards under
their content address (an existing one is left untouched), rejected.jsonl, and plan.json last,
as the commit point.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from batch_pipeline.inputs.models import (
    PLAN_FILE,
    REJECTED_FILE,
    SHARDS_DIR,
    InputOptions,
    InputPlan,
    InputRejected,
    Problem,
    Shard,
    ValidationReport,
)
from batch_pipeline.inputs.reader import LineReader
from batch_pipeline.inputs.scan import FileScan, ScanResult
from batch_pipeline.inputs.shard import iter_index
from batch_pipeline.inputs.table import (
    KEYS_FILE,
    REQUESTS_FILE,
    check_table,
    render_table,
    row_keys,
    row_reasons,
    table_options,
    table_sha256,
)
from batch_pipeline.inputs.template import RequestTemplate
from batch_pipeline.ledger.storage import DataPath, publish, scratch_for
from batch_pipeline.providers import PROVIDERS


def validate_file(path: Path, options: InputOptions) -> ValidationReport:
    """Check every line of a file without writing anything; the report lists every problem."""
    return _report(path, FileScan(path, options).run())


def prepare_input(path: DataPath, staging_dir: DataPath, options: InputOptions) -> InputPlan:
    """Validate, normalize and shard `path` into staging_dir; a no-op when already done.

    Raises InputRejected when the file has a file-level problem, or any problem under the
    `reject` policy; nothing submittable is written then.
    """
    current = _current_plan(path, staging_dir, options)
    if current is not None:
        return current
    with scratch_for(staging_dir / PLAN_FILE) as scratch:
        work_dir = Path(tempfile.mkdtemp(prefix=".work-", dir=scratch))
        try:
            with _RejectedWriter(
                work_dir / REJECTED_FILE, options.on_invalid == "skip"
            ) as rejected:
                scan = FileScan(path, options, work_dir=work_dir, on_reject=rejected.write)
                result = scan.run()
            if result.fatal or (result.total_problems and options.on_invalid == "reject"):
                _unlink(staging_dir / PLAN_FILE)
                raise InputRejected(_report(path, result))
            plan = _commit(staging_dir, work_dir, result, options)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    return plan


@dataclass(frozen=True)
class TableInput:
    """A table (a Parquet file or folder) and the template its rows take."""

    path: DataPath
    template: RequestTemplate


InputSource = DataPath | TableInput  # a JSONL file, or a table with its template


def prepare(source: InputSource, staging_dir: DataPath, options: InputOptions) -> InputPlan:
    """The plan of a JSONL file or a table (see prepare_input, prepare_table)."""
    if isinstance(source, TableInput):
        return prepare_table(source.path, source.template, staging_dir, options)
    return prepare_input(source, staging_dir, options)


def source_sha256(source: InputSource) -> str | None:
    """The identity a plan records for its input (None: the input cannot be read)."""
    if isinstance(source, TableInput):
        return table_sha256(source.path, source.template)
    return content_sha256(source)


def prepare_table(
    source: DataPath, template: RequestTemplate, staging_dir: DataPath, options: InputOptions
) -> InputPlan:
    """Render a table's rows with `template` and shard the requests into staging_dir, like
    `prepare_input`; rows that fail become `input` errors (the skip policy), and the key and
    passthrough columns land in staging_dir/keys.parquet. A no-op when already done."""
    table = check_table(source, template)
    identity = table_sha256(source, template)
    options = table_options(options)
    current = _current_plan(source, staging_dir, options, identity)
    if current is not None:
        return current
    with scratch_for(staging_dir / PLAN_FILE) as scratch:
        work_dir = Path(tempfile.mkdtemp(prefix=".work-", dir=scratch))
        try:
            requests = work_dir / REQUESTS_FILE
            render_table(table, template, requests, work_dir / KEYS_FILE)
            with _RejectedWriter(work_dir / REJECTED_FILE, True) as rejected:
                sink = row_reasons(rejected.write)
                result = FileScan(requests, options, work_dir=work_dir, on_reject=sink).run()
            if result.fatal:
                raise InputRejected(_report(source, result))
            plan = _commit(staging_dir, work_dir, result, options, identity, template)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    return plan


def validate_table(
    source: DataPath, template: RequestTemplate, options: InputOptions
) -> ValidationReport:
    """Check every row of a table with its template without writing anything outside a
    temporary folder; each problem names the row and its key."""
    table = check_table(source, template)
    with tempfile.TemporaryDirectory(prefix="batch-pipeline-") as folder:
        work_dir = Path(folder)
        requests, keys = work_dir / REQUESTS_FILE, work_dir / KEYS_FILE
        rendering = render_table(table, template, requests, keys)
        found: list[tuple[int, str]] = []

        def note(line: int, custom_id: str | None, reason: str, raw: bytes, cut: bool) -> None:
            found.append((line, reason))

        result = FileScan(requests, table_options(options), on_reject=row_reasons(note)).run()
        shown = found[: options.max_problems]
        problems = [
            Problem(path=str(source), line=None, field=f"row {line} ({key})", reason=reason)
            for (line, reason), key in zip(
                shown, row_keys(keys, template.keys, [n for n, _ in shown]), strict=True
            )
        ]
    result.summary.lines = rendering.rows
    return ValidationReport(
        path=str(source),
        problems=problems,
        total_problems=len(found),
        notes=[n for n in result.notes if "unknown" not in n],
        summary=result.summary,
        ok=not found,
    )


def read_shard_index(shard: Shard) -> dict[str, int]:
    """custom_id -> 1-based input line for every request of a shard."""
    return dict(iter_index(shard.index_path))


def _report(path: DataPath, result: ScanResult) -> ValidationReport:
    return ValidationReport(
        path=str(path),
        problems=result.problems,
        total_problems=result.total_problems,
        notes=result.notes,
        summary=result.summary,
        ok=result.total_problems == 0,
    )


def _current_plan(
    path: DataPath, staging_dir: DataPath, options: InputOptions, identity: str | None = None
) -> InputPlan | None:
    """The saved plan when it was made from these exact bytes (a table: `identity`) with these
    options."""
    plan = InputPlan.load(staging_dir)
    if plan is None or plan.options_fingerprint != options.fingerprint():
        return None
    files = [p for s in plan.shards for p in (s.path, s.index_path)]
    files += [p for p in (plan.rejected_path, plan.keys_path) if p is not None]
    if not all(f.is_file() for f in files):
        return None
    if (identity or content_sha256(path)) != plan.input_sha256:
        return None
    return plan


def content_sha256(path: DataPath) -> str | None:
    """sha256 of the file's content (decompressed for gzip), as the scan computes it."""
    reader = LineReader(path, max_line_bytes=1)
    try:
        for _ in reader.batches():
            pass
    except OSError:
        return None
    return reader.state.sha256.hexdigest()


def _commit(
    staging_dir: DataPath,
    work_dir: Path,
    result: ScanResult,
    options: InputOptions,
    identity: str | None = None,
    template: RequestTemplate | None = None,
) -> InputPlan:
    rejected_count = result.rejected_lines
    shards_dir = staging_dir / SHARDS_DIR
    shards: list[Shard] = []
    for draft in result.drafts:
        assert draft.path is not None and draft.index_path is not None
        shard_id = draft.shard_id
        target = shards_dir / f"{shard_id}.jsonl"
        target_index = shards_dir / f"{shard_id}.index.jsonl"
        _place(draft.index_path, target_index)
        _place(draft.path, target)
        shards.append(
            Shard(
                shard_id=shard_id,
                provider=draft.provider,
                model=draft.model,
                endpoint=draft.endpoint,
                submit_mode=PROVIDERS[draft.provider].submit_mode,
                path=target,
                index_path=target_index,
                request_count=draft.count,
                bytes=draft.bytes,
                first_line=draft.first_line,
                last_line=draft.last_line,
            )
        )
    rejected_path = None
    if rejected_count:
        rejected_path = staging_dir / REJECTED_FILE
        _place(work_dir / REJECTED_FILE, rejected_path, replace_if_different=True)
    else:
        _unlink(staging_dir / REJECTED_FILE)
    keys_path = None
    if template is not None:
        keys_path = staging_dir / KEYS_FILE
        _place(work_dir / KEYS_FILE, keys_path, replace_if_different=True)
    plan = InputPlan(
        input_name=staging_dir.name,
        input_sha256=identity or result.read.sha256.hexdigest(),
        options_fingerprint=options.fingerprint(),
        summary=result.summary,
        shards=shards,
        rejected_path=rejected_path,
        rejected_count=rejected_count,
        total_lines=result.total_lines,
        keys_path=keys_path,
        template=template.model_dump(mode="json", by_alias=True) if template else None,
    )
    plan_file = work_dir / PLAN_FILE
    plan_file.write_bytes(plan.to_json(staging_dir))
    _place(plan_file, staging_dir / PLAN_FILE, replace_if_different=True)
    return plan


def _place(source: Path, target: DataPath, replace_if_different: bool = False) -> None:
    """Publish source at target in one step; keep an existing target with the same content."""
    if target.is_file() and (not replace_if_different or _same_bytes(source, target)):
        return
    publish(source, target)


def _same_bytes(a: Path, b: DataPath) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return _file_sha256(a) == _file_sha256(b)


def _file_sha256(path: DataPath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _unlink(path: DataPath) -> None:
    path.unlink(missing_ok=True)


class _RejectedWriter:
    """Streams skip-policy rejected lines to rejected.jsonl, one JSON object per line."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self._out: BinaryIO | None = None

    def __enter__(self) -> _RejectedWriter:
        if self.enabled:
            self._out = open(self.path, "wb")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._out is not None:
            self._out.close()

    def write(
        self, line: int, custom_id: str | None, reason: str, raw: bytes, truncated: bool
    ) -> None:
        """Record one rejected line (the raw text decoded losslessly where it is UTF-8)."""
        if self._out is None:
            return
        entry: dict[str, object] = {
            "input_line": line,
            "custom_id": custom_id,
            "reason": reason,
            "raw": raw.decode("utf-8", "replace").rstrip("\r"),
        }
        if truncated:
            entry["raw_truncated"] = True
        self._out.write(orjson.dumps(entry) + b"\n")
