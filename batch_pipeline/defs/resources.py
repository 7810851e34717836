"""Resources: the gateway connection (URL and key from the environment) and pipeline settings."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import dagster as dg
from pydantic import Field

from batch_pipeline.gateway import BifrostClient, Timeouts
from batch_pipeline.inputs import InputOptions
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.costs import PriceTable


class GatewayResource(dg.ConfigurableResource):
    """A Bifrost gateway. The key is resolved at launch from the environment, never shown."""

    base_url: str = Field(description="Gateway base URL, e.g. http://localhost:8080")
    api_key: str = Field(default="", description="Bearer key; empty sends none")
    virtual_key: str = Field(default="", description="Bifrost virtual key (x-bf-vk); optional")
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_retry_seconds: float = 60.0
    ca_bundle: str = Field(default="", description="CA bundle path for TLS; empty: system CAs")
    allow_insecure_http: bool = Field(
        default=False, description="Allow plain http to a host that is not loopback"
    )

    @contextmanager
    def client(
        self, *, max_retry_seconds: float | None = None, read_timeout: float | None = None
    ) -> Iterator[BifrostClient]:
        """An open client for the duration of the block; a caller with a deadline (a sensor)
        may tighten the retry budget and read timeout."""
        with BifrostClient(
            self.base_url,
            api_key=self.api_key or None,
            virtual_key=self.virtual_key or None,
            timeouts=Timeouts(connect=self.connect_timeout, read=read_timeout or self.read_timeout),
            max_retry_seconds=max_retry_seconds or self.max_retry_seconds,
            verify=self.ca_bundle or True,
            allow_insecure_http=self.allow_insecure_http,
        ) as client:
            yield client


class PipelineSettings(dg.ConfigurableResource):
    """Where data lives and how input files are validated, submitted and polled."""

    data_root: str = Field(
        default="data",
        description="Root of inbox/, staging/, results/ ...: a local folder or s3://bucket/prefix",
    )
    default_provider: str = Field(
        default="", description="Provider for models given without a `provider/` prefix"
    )
    on_invalid: Literal["reject", "skip"] = Field(
        default="reject",
        description="reject: a file with any invalid line is not submitted; skip: bad lines "
        "become stage=input error rows and the rest is submitted",
    )
    completion_window: str = "24h"
    create_settle_seconds: float = Field(
        default=60.0,
        description="After a create whose answer was lost, how long before a batch not listed "
        "at the gateway counts as never made",
    )
    max_polls_per_tick: int = Field(default=500, description="Batches retrieved per sensor tick")
    max_collect_attempts: int = Field(default=5, description="Collect runs requested per file")
    inbox_settle_seconds: float = Field(
        default=2.0, description="An inbox file must be unchanged this long before it is taken"
    )
    prices_file: str = Field(
        default="",
        description='JSON {"provider/model": {"input_per_1m", "output_per_1m", '
        '"batch_discount"}} overriding the shipped price table',
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
    max_retry_attempts: int = Field(default=3, description="Attempts per request, retries included")
    stuck_grace_hours: float = Field(
        default=6.0, description="Warn when a batch runs this long past its expires_at"
    )
    retention_margin_days: float = Field(
        default=3.0, description="Warn when uncollected results are this close to deletion"
    )
    max_error_rate: float = Field(default=0.2, description="Warn above this share of errors")
    delete_files_after_collect: bool = Field(
        default=False, description="Delete uploaded and provider output files after a collect"
    )

    def layout(self) -> DataLayout:
        return DataLayout.at(self.data_root)

    def store(self) -> ManifestStore:
        return ManifestStore(self.layout().root / "batches")

    def price_table(self) -> PriceTable:
        return PriceTable.load(self.prices_file or None)

    def input_options(self) -> InputOptions:
        return InputOptions(
            default_provider=self.default_provider or None, on_invalid=self.on_invalid
        )


def _from_env(name: str, default: str) -> str:
    """An EnvVar (resolved at launch, hidden in the UI) when set, else the default."""
    return dg.EnvVar(name) if name in os.environ else default


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "gateway": GatewayResource(
                base_url=_from_env("BIFROST_BASE_URL", "http://localhost:8080"),
                api_key=_from_env("BIFROST_API_KEY", ""),
                virtual_key=_from_env("BIFROST_VIRTUAL_KEY", ""),
            ),
            "pipeline": PipelineSettings(
                data_root=_from_env("BATCH_PIPELINE_DATA_ROOT", "data"),
                default_provider=_from_env("BATCH_PIPELINE_DEFAULT_PROVIDER", ""),
            ),
        }
    )
