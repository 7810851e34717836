"""The typed vocabulary of the input layer: options, problems, reports, shards and plans."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from batch_pipeline.errors import BatchPipelineError
from batch_pipeline.ledger.storage import DataPath
from batch_pipeline.providers import PROVIDERS, SubmitMode

PLAN_FILE = "plan.json"
REJECTED_FILE = "rejected.jsonl"
SHARDS_DIR = "shards"


class ShardLimits(BaseModel):
    """Bounds of one provider's batches: a shard never exceeds any maximum, nor has fewer
    requests than `min_requests` (Bedrock's quota: 100 records a job)."""

    model_config = ConfigDict(frozen=True)

    max_requests: int = Field(gt=0)
    max_bytes: int = Field(gt=0)
    max_bytes_per_request: int = Field(gt=0)
    min_requests: int = Field(default=1, gt=0)


class InputOptions(BaseModel):
    """How to read an input file: default provider, invalid-line policy, limit overrides."""

    model_config = ConfigDict(frozen=True)

    default_provider: str | None = None
    on_invalid: Literal["reject", "skip"] = "reject"
    limits: dict[str, ShardLimits] = Field(default_factory=dict)
    max_problems: int = Field(default=50, ge=0)

    @field_validator("default_provider")
    @classmethod
    def _known_default(cls, value: str | None) -> str | None:
        if value is not None and value not in PROVIDERS:
            raise ValueError(
                f"unknown default provider {value!r} (supported: {', '.join(sorted(PROVIDERS))})"
            )
        return value

    @field_validator("limits")
    @classmethod
    def _known_limit_providers(cls, value: dict[str, ShardLimits]) -> dict[str, ShardLimits]:
        unknown = sorted(set(value) - set(PROVIDERS))
        if unknown:
            raise ValueError(f"limits for unknown providers: {', '.join(unknown)}")
        return value

    def fingerprint(self) -> str:
        """A digest of every option that changes the shards, so a changed option re-plans."""
        shaping = {
            "default_provider": self.default_provider,
            "on_invalid": self.on_invalid,
            "limits": {name: lim.model_dump() for name, lim in sorted(self.limits.items())},
        }
        return hashlib.sha256(orjson.dumps(shaping, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class Problem(BaseModel):
    """One thing wrong with an input file; `str()` is the `FILE:LINE: field: reason` line."""

    model_config = ConfigDict(frozen=True)

    path: str
    line: int | None
    field: str | None
    reason: str
    custom_id: str | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = self.reason if self.field is None else f"{self.field}: {self.reason}"
        return f"{where}: {what}"

    def short(self) -> str:
        """`field: reason` without the location, as stored in rejected.jsonl and errors rows."""
        return self.reason if self.field is None else f"{self.field}: {self.reason}"


class FileSummary(BaseModel):
    """What a file holds. estimated_prompt_tokens = request JSON bytes / 4 (a rough upper bound)."""

    requests: int = 0
    bytes: int = 0
    lines: int = 0
    blank_lines: int = 0
    models: list[str] = Field(default_factory=list)
    endpoints: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)
    estimated_prompt_tokens: int = 0
    largest_lines: list[tuple[int, int]] = Field(default_factory=list)
    shards: int = 0

    def describe(self) -> str:
        """One line for humans: counts, models and shards."""
        models = ", ".join(self.models) or "none"
        return (
            f"{self.requests} requests, {self.bytes:,} bytes, {self.shards} shards, "
            f"models: {models}, ~{self.estimated_prompt_tokens:,} prompt tokens"
        )


class ValidationReport(BaseModel):
    """Every problem of one file (the first max_problems kept, all counted), notes and summary."""

    path: str
    problems: list[Problem] = Field(default_factory=list)
    total_problems: int = 0
    notes: list[str] = Field(default_factory=list)
    summary: FileSummary = Field(default_factory=FileSummary)
    ok: bool = True


class Shard(BaseModel):
    """One batch-sized JSONL file for one (provider, model, endpoint), named by its content."""

    model_config = ConfigDict(frozen=True)

    shard_id: str
    provider: str
    model: str
    endpoint: str
    submit_mode: SubmitMode
    path: DataPath
    index_path: DataPath
    request_count: int
    bytes: int
    first_line: int
    last_line: int


class InputPlan(BaseModel):
    """The validated, sharded form of one input file; saved as staging_dir/plan.json."""

    input_name: str
    input_sha256: str
    options_fingerprint: str
    summary: FileSummary
    shards: list[Shard]
    rejected_path: DataPath | None
    rejected_count: int
    total_lines: int
    # a table's: its key and passthrough columns by row (keys.parquet), and the template used
    keys_path: DataPath | None = None
    template: dict[str, Any] | None = None

    def to_json(self, staging_dir: DataPath) -> bytes:
        """plan.json bytes with paths relative to staging_dir, so the data root can move."""
        data = self.model_dump(mode="json")
        for dumped, shard in zip(data["shards"], self.shards, strict=True):
            dumped["path"] = _relative(shard.path, staging_dir)
            dumped["index_path"] = _relative(shard.index_path, staging_dir)
        for name in ("rejected_path", "keys_path"):
            path = getattr(self, name)
            if path is not None:
                data[name] = _relative(path, staging_dir)
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def load(cls, staging_dir: DataPath) -> InputPlan | None:
        """The plan saved in staging_dir, or None when there is none (or it is unreadable)."""
        try:
            data = orjson.loads((staging_dir / PLAN_FILE).read_bytes())
            for shard in data["shards"]:
                shard["path"] = staging_dir / shard["path"]
                shard["index_path"] = staging_dir / shard["index_path"]
            for name in ("rejected_path", "keys_path"):
                if data.get(name) is not None:
                    data[name] = staging_dir / data[name]
            return cls.model_validate(data)
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _relative(path: DataPath, base: DataPath) -> str:
    prefix = str(base).rstrip("/") + "/"
    if not str(path).startswith(prefix):
        raise ValueError(f"{path} is not under {base}")
    return str(path)[len(prefix) :]


class InputRejected(BatchPipelineError):
    """An input file with problems under the `reject` policy; `report` lists every problem."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        first = str(report.problems[0]) if report.problems else report.path
        more = report.total_problems - 1
        suffix = f" (and {more} more problem{'s' if more != 1 else ''})" if more > 0 else ""
        super().__init__(f"{first}{suffix}")
