"""A real S3-compatible server on loopback (moto's standalone server) for object-store tests."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow.fs
import pytest


@dataclass(frozen=True)
class S3Bucket:
    """An empty bucket on a running server, and the environment that points AWS clients at it."""

    endpoint: str
    name: str
    env: dict[str, str]

    def url(self, prefix: str = "data") -> str:
        return f"s3://{self.name}/{prefix}"

    def arrow_fs(self) -> pyarrow.fs.S3FileSystem:
        """pyarrow's own S3 client: reads what the pipeline wrote without going through fsspec."""
        return pyarrow.fs.S3FileSystem(
            access_key=self.env["AWS_ACCESS_KEY_ID"],
            secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
        )


@contextmanager
def running_s3() -> Iterator[str]:
    """moto's S3 server on a free loopback port; always stopped."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def make_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket, with AWS_* set for this test only (fsspec's cached clients dropped)."""
    import s3fs

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"bp-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().call_s3("create_bucket", Bucket=name)
    return S3Bucket(endpoint, name, env)
