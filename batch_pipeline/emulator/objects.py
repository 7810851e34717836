"""Simulated cloud object stores: Bedrock's S3, Vertex's GCS and Azure blob storage.

An object is a stored file whose id is its URI (`s3://bucket/key`, `gs://bucket/key`,
`https://account.blob.core.windows.net/container/path`), owned by the provider that reads it,
so the Files API of that provider and the batch jobs see the same objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

from batch_pipeline.emulator.store import FileRecord, Store

OWNERS = {"s3": "bedrock", "gs": "vertex", "https": "azure_blob"}
BLOB_HOST_SUFFIXES = (".blob.core.windows.net", ".dfs.core.windows.net")


class ObjectUriError(ValueError):
    """A URI that names no object of a simulated store."""


def split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, bucket, key) of an object URI; an Azure blob's bucket is `host/container`."""
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme not in OWNERS or not parts.netloc:
        raise ObjectUriError(f"not an object URI: {uri}")
    if scheme == "https":
        if not parts.netloc.endswith(BLOB_HOST_SUFFIXES):
            raise ObjectUriError(f"not an Azure blob URL: {uri}")
        container, _, key = parts.path.lstrip("/").partition("/")
        return scheme, f"{parts.netloc}/{container}", key
    return scheme, parts.netloc, parts.path.lstrip("/")


def owner(uri: str) -> str:
    """The provider whose store holds this URI."""
    return OWNERS[split_uri(uri)[0]]


def join(prefix: str, *names: str) -> str:
    """`prefix/name/...` with exactly one slash between parts."""
    return "/".join([prefix.rstrip("/"), *(name.strip("/") for name in names)])


def put_object(
    store: Store,
    uri: str,
    source: Path | bytes,
    *,
    purpose: str = "batch",
    content_type: str | None = None,
) -> FileRecord:
    """Store an object (moving `source` when it is a file), replacing any older version."""
    target = store.file_data(uri)
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.move(source, target)
    filename = uri.rstrip("/").rsplit("/", 1)[-1]
    return store.register_file(uri, owner(uri), filename, purpose, content_type)


def get_object(store: Store, uri: str) -> FileRecord | None:
    """The live object at `uri`, if any."""
    try:
        return store.live_file(uri, owner(uri))
    except ObjectUriError:
        return None


def list_objects(store: Store, prefix: str) -> list[FileRecord]:
    """Every live object whose URI starts with `prefix`, recursively, ordered by URI."""
    return [f for f in store.files_under(prefix) if f.provider == owner(prefix)]
