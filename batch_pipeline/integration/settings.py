"""The settings of one pipeline instance: what a `defs.yaml` says under `attributes:`.

Plain pydantic, no Dagster: `BatchPipelineComponent` reads these fields from YAML and
`build_pipeline_defs` takes them from Python. Structure lives here (names, where data is, which
gateway, policies, budgets, sensor intervals); per-run choices are `dg.Config` on the assets that
use them, and secrets are named by environment variable, never held.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batch_pipeline.inputs.template import RequestTemplate
from batch_pipeline.prices import Price
from batch_pipeline.providers import PROVIDERS, ProviderOptions

# Dagster names (jobs, sensors, resource keys) allow letters, digits and `_`; the name prefixes
# all of them, and asset keys, so it must be one such word.
NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,62}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


class GatewaySettings(_Section):
    """Which Bifrost gateway the instance talks to. Keys are named by environment variable and
    read when a run or sensor tick starts, so they never appear in config, the UI or logs."""

    base_url: str | None = Field(
        default=None,
        description="Gateway URL, e.g. https://bifrost.internal:8080; unset: the value of "
        "`base_url_env` (else http://localhost:8080)",
    )
    base_url_env: str = Field(
        default="BIFROST_BASE_URL", description="Variable holding the URL when `base_url` is unset"
    )
    api_key_env: str = Field(
        default="BIFROST_API_KEY",
        description="Variable holding the key sent as `Authorization: Bearer`; unset: none",
    )
    virtual_key_env: str = Field(
        default="BIFROST_VIRTUAL_KEY",
        description="Variable holding the Bifrost virtual key sent as `x-bf-vk`; unset: none",
    )
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_retry_seconds: float = Field(
        default=60.0, description="How long idempotent calls are retried with backoff"
    )
    ca_bundle: str | None = Field(default=None, description="CA bundle for TLS; unset: system CAs")
    allow_insecure_http: bool = Field(
        default=False, description="Allow plain http to a host that is not loopback"
    )
    pool: str = Field(
        default="bifrost_gateway",
        description="Dagster concurrency pool of the steps that call the gateway",
    )

    _timeouts = field_validator(
        "connect_timeout_seconds", "read_timeout_seconds", "max_retry_seconds"
    )(_positive)


class InputSettings(_Section):
    """How inbox files are taken and validated."""

    on_invalid: Literal["reject", "skip"] = Field(
        default="reject",
        description="reject: a file with any invalid line is not submitted; skip: invalid "
        "lines become `input` error rows and the rest is submitted",
    )
    default_provider: str | None = Field(
        default=None, description="Provider of models written without a `provider/` prefix"
    )
    complete_when: Literal["quiet", "renamed", "marker"] = Field(
        default="quiet",
        description="When an inbox file is complete enough to take: `quiet`, once a "
        "`<file>.done` marker exists or it has been unchanged for `settle_seconds` and ends "
        "with a whole line; `renamed`, at once (its producer writes under a temporary name, "
        "`.x`, `x.tmp` or `x.part`, and renames it); `marker`, only once `<file>.done` exists",
    )
    settle_seconds: float = Field(
        default=10.0,
        description="The quiet period: with complete_when quiet, an inbox file unchanged this "
        "long (and ending with a whole line) is taken",
    )
    on_duplicate: Literal["refuse", "resubmit"] = Field(
        default="refuse",
        description="Content already registered under another file name: refused with a "
        "pointer to that file's results, or submitted (and paid) again",
    )
    on_name_reuse: Literal["refuse", "version"] = Field(
        default="refuse",
        description="New content under a file name already taken: refused (the file moves to "
        "inbox/rejected/ with a reason), or taken as the next version of that name (a new "
        "partition `<key>.v2`, `.v3`, ...); the original content is kept either way",
    )

    @field_validator("default_provider")
    @classmethod
    def _known_provider(cls, value: str | None) -> str | None:
        if value is not None and value not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise ValueError(f"unknown provider {value!r} (known: {known})")
        return value


class SubmitSettings(_Section):
    """How batches are created: window, budgets, queue caps."""

    completion_window: str = Field(default="24h", description="Batch completion window")
    create_settle_seconds: float = Field(
        default=60.0,
        description="After a create whose answer was lost, how long before a batch not listed "
        "at the gateway counts as never made",
    )
    max_cost_per_file_usd: float | None = Field(
        default=None, description="Refuse to submit a file whose estimated cost is higher"
    )
    max_cost_per_day_usd: float | None = Field(
        default=None, description="Refuse to submit past this estimated spend per UTC day"
    )
    max_enqueued_tokens: dict[str, int] = Field(
        default_factory=dict,
        description='Per "provider/model": estimated input tokens allowed in flight; '
        "shards wait until they fit",
    )


class CollectSettings(_Section):
    """How finished batches are collected and retried."""

    max_attempts: int = Field(
        default=5, description="Collect runs the status sensor requests per submission"
    )
    delete_files_after: bool = Field(
        default=False,
        description="Delete the uploaded shards and provider output files (Azure blobs "
        "included) after a collect whose invariant check passed",
    )
    max_retry_attempts: int = Field(
        default=3, description="Attempts per request, retry waves included"
    )

    _counts = field_validator("max_attempts", "max_retry_attempts")(_positive)


class SensorSettings(_Section):
    """One sensor's interval and whether it runs when the code location first loads."""

    interval_seconds: int = 30
    running: bool = False

    _interval = field_validator("interval_seconds")(_positive)


class SensorsSettings(_Section):
    """The inbox sensor (new files -> submit runs; stopped by default, since submitting costs
    money), the status sensor (polls batches -> collect runs; running by default) and, with a
    `source`, the source sensor (its materializations -> inbox tables; running by default)."""

    inbox: SensorSettings = SensorSettings(interval_seconds=30, running=False)
    status: SensorSettings = SensorSettings(interval_seconds=30, running=True)
    source: SensorSettings = SensorSettings(interval_seconds=30, running=True)
    max_polls_per_tick: int = Field(
        default=500, description="Batches the status sensor retrieves per tick"
    )

    _polls = field_validator("max_polls_per_tick")(_positive)


class ScheduleSettings(_Section):
    """A schedule that submits everything waiting in the inbox (stopped by default)."""

    cron: str = Field(default="0 2 * * *", description="When to submit what waits in the inbox")
    timezone: str = "UTC"
    running: bool = False


class AlertSettings(_Section):
    """Thresholds of the warning checks."""

    stuck_grace_hours: float = Field(
        default=6.0, description="Warn when a batch runs this long past its expires_at"
    )
    retention_margin_days: float = Field(
        default=3.0, description="Warn when uncollected results are this close to deletion"
    )
    max_error_rate: float = Field(
        default=0.2, description="Warn above this share of failed requests (0 to 1)"
    )

    @field_validator("max_error_rate")
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be between 0 and 1")
        return value


class PipelineSettings(_Section):
    """One pipeline instance: an inbox of request files under a data root, sent to one gateway,
    collected into results and errors Parquet. Everything it makes carries `name`."""

    # an error never repeats the value: a SAS token pasted into a blob URL must not reach logs
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(
        description="Prefixes every asset key, job, sensor, schedule and resource key this "
        "instance makes (letters, digits, `_`)",
    )
    data_root: str | None = Field(
        default=None,
        description="Folder or s3://bucket/prefix holding inbox/, inputs/, staging/, "
        "batches/, results/, errors/, outcomes/; unset: data/<name>",
    )
    group: str | None = Field(default=None, description="Dagster asset group; unset: the name")
    template: RequestTemplate | None = Field(
        default=None,
        description="How each row of a table in the inbox becomes a request (a table's own "
        "<name>.template.yaml beside it in the inbox wins)",
    )
    template_file: str | None = Field(
        default=None, description="The same, as a YAML file (read when a table is prepared)"
    )
    source: str | None = Field(
        default=None,
        description="An upstream asset key (`a/b`): each of its materializations is loaded "
        "through its IO manager and becomes a table in the inbox (needs a template)",
    )
    gateway: GatewaySettings = GatewaySettings()
    providers: ProviderOptions = Field(
        default_factory=ProviderOptions,
        description="What some providers need beyond a model: bedrock_role_arn and "
        "bedrock_output_s3_uri, vertex_output_folder (gs://), gemini_input (inline or file), "
        "azure_input (file or blob), azure_blob_folder, azure_blob_endpoint and "
        "azure_blob_sas_env (the variable holding the SAS token)",
    )
    inputs: InputSettings = InputSettings()
    submit: SubmitSettings = SubmitSettings()
    collect: CollectSettings = CollectSettings()
    sensors: SensorsSettings = SensorsSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    alerts: AlertSettings = AlertSettings()
    prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Prices by "provider/model" ({input_per_1m, output_per_1m, batch_discount}), '
        "over the shipped table",
    )
    prices_file: str | None = Field(
        default=None, description="A JSON file of prices in the same form, read at run time"
    )

    @field_validator("name")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                f"{value!r}: a pipeline name starts with a letter and holds only letters, "
                "digits and '_' (at most 63), since it prefixes Dagster names"
            )
        return value

    @model_validator(mode="after")
    def _checked(self) -> PipelineSettings:
        if self.template is not None and self.template_file is not None:
            raise ValueError("give template or template_file, not both")
        if self.source is not None:
            if not all(self.source.split("/")):
                raise ValueError(f"source: {self.source!r} is not an asset key like a/b")
            if self.template is None and self.template_file is None:
                raise ValueError("source: its rows need a template (template or template_file)")
        for key in [*self.prices, *self.submit.max_enqueued_tokens]:
            provider, sep, model = key.partition("/")
            if not sep or not model or provider not in PROVIDERS:
                raise ValueError(f"{key!r}: name a model as provider/model (a known provider)")
        for key, price in self.prices.items():
            Price.model_validate(price, context={"model": key})
        negative = [path for path, value in _numbers(self) if value < 0]
        if negative:
            raise ValueError(f"must not be negative: {', '.join(negative)}")
        return self

    @property
    def root(self) -> str:
        """The data root, with its default filled in."""
        return self.data_root or f"data/{self.name}"

    @property
    def group_name(self) -> str:
        return self.group or self.name


def _numbers(model: BaseModel, prefix: str = "") -> list[tuple[str, float]]:
    """Every number in the settings with its dotted path (for one range check of them all)."""
    found: list[tuple[str, float]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found += _numbers(value, f"{prefix}{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.append((f"{prefix}{name}", value))
    return found
