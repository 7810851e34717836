"""The two resources of an instance: its gateway connection and its data root.

Resources hold connections and handles only; policies are the factory's business. Secrets are
named by environment variable and read through Dagster's `EnvVar` when a run or tick opens a
client, so they appear in no config, UI page, log or exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from batch_pipeline.gateway import BifrostClient, Timeouts
from batch_pipeline.gateway.azure_blob import AzureBlobClient
from batch_pipeline.integration.settings import GatewaySettings
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.providers import ProviderOptions

DEFAULT_GATEWAY_URL = "http://localhost:8080"


class GatewayResource(dg.ConfigurableResource):
    """A Bifrost gateway: its URL and the names of the variables holding its keys."""

    base_url: str = Field(default="", description="Gateway URL; empty: the value of base_url_env")
    base_url_env: str = Field(default="BIFROST_BASE_URL")
    api_key_env: str = Field(default="BIFROST_API_KEY", description="Variable with the API key")
    virtual_key_env: str = Field(
        default="BIFROST_VIRTUAL_KEY", description="Variable with the Bifrost virtual key"
    )
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_retry_seconds: float = 60.0
    ca_bundle: str = Field(default="", description="CA bundle path for TLS; empty: system CAs")
    allow_insecure_http: bool = False

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> GatewayResource:
        return cls(
            base_url=settings.base_url or "",
            base_url_env=settings.base_url_env,
            api_key_env=settings.api_key_env,
            virtual_key_env=settings.virtual_key_env,
            connect_timeout_seconds=settings.connect_timeout_seconds,
            read_timeout_seconds=settings.read_timeout_seconds,
            max_retry_seconds=settings.max_retry_seconds,
            ca_bundle=settings.ca_bundle or "",
            allow_insecure_http=settings.allow_insecure_http,
        )

    def with_base_url(self, base_url: str) -> GatewayResource:
        """The same gateway settings, at another URL (the command line's --gateway)."""
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**fields, "base_url": base_url})

    @property
    def url(self) -> str:
        """The URL in use: `base_url`, else the variable named by `base_url_env`, else the
        local default."""
        return self.base_url or _env(self.base_url_env) or DEFAULT_GATEWAY_URL

    @contextmanager
    def client(self, *, max_retry_seconds: float | None = None) -> Iterator[BifrostClient]:
        """An open client for the block; a caller with a deadline (a sensor tick) may tighten
        the retry budget (and cuts each call's timeouts to its deadline)."""
        with BifrostClient(
            self.url,
            api_key=_env(self.api_key_env),
            virtual_key=_env(self.virtual_key_env),
            timeouts=Timeouts(
                connect=self.connect_timeout_seconds,
                read=self.read_timeout_seconds,
            ),
            max_retry_seconds=max_retry_seconds or self.max_retry_seconds,
            verify=self.ca_bundle or True,
            allow_insecure_http=self.allow_insecure_http,
        ) as client:
            yield client

    @contextmanager
    def azure_blobs(self, options: ProviderOptions) -> Iterator[AzureBlobClient | None]:
        """A blob client with this gateway's timeouts when the instance puts Azure shards as
        blobs and the variable naming its SAS token is set; else None."""
        token = _env(options.azure_blob_sas_env) if options.azure_input == "blob" else None
        if token is None:
            yield None
            return
        with AzureBlobClient(
            sas_token=token,
            endpoint=options.azure_blob_endpoint,
            timeouts=Timeouts(connect=self.connect_timeout_seconds, read=self.read_timeout_seconds),
            max_retry_seconds=self.max_retry_seconds,
        ) as blobs:
            yield blobs


class DataRootResource(dg.ConfigurableResource):
    """The instance's data root: a local folder or s3://bucket/prefix (DESIGN.md "Data layout")."""

    root: str = Field(description="Folder or s3://bucket/prefix")

    def with_root(self, root: str) -> DataRootResource:
        """The same resource over another data root (the command line's --data-dir)."""
        return type(self)(root=root)

    def layout(self) -> DataLayout:
        return DataLayout.at(self.root)

    def store(self) -> ManifestStore:
        return ManifestStore(self.layout().root / "batches")


def _env(name: str) -> str | None:
    """The value of a named variable, read now through Dagster's EnvVar; None when the name is
    empty or the variable is unset or empty."""
    return (dg.EnvVar(name).get_value() or None) if name else None
