"""AzureBlobClient over real HTTP against the emulator's Azure Blob routes: put, get and delete
through the endpoint override, Azure's errors as one line, retries over injected faults, and
the SAS token kept out of every message, repr and log line."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batch_pipeline.emulator import EmbeddedEmulator
from batch_pipeline.gateway.azure_blob import (
    AzureBlobClient,
    BlobConfigError,
    BlobStatusError,
    BlobStorageError,
    BlobTransportError,
)

SIG = "S3cr3tS1gnatur3%2Bx%3D"
TOKEN = f"sv=2024-08-04&ss=b&srt=co&sp=rwc&se=2030-01-01T00%3A00%3A00Z&sig={SIG}"
SECRETS = (TOKEN, SIG, "S3cr3tS1gnatur3")
FOLDER = "https://acct.blob.core.windows.net/batches/in"


@pytest.fixture
def blobs(emulator: EmbeddedEmulator) -> Iterator[AzureBlobClient]:
    """A client whose blob URLs go to the emulator's Azure Blob routes."""
    with AzureBlobClient(
        sas_token=TOKEN, endpoint=f"{emulator.base_url}/azure-blob/acct"
    ) as client:
        yield client


def _shard(tmp_path: Path, lines: int = 2000) -> Path:
    source = tmp_path / "shard.jsonl"
    source.write_bytes(b"".join(b'{"custom_id":"r%d"}\n' % n for n in range(lines)))
    return source


def _object(emulator: EmbeddedEmulator, uri: str) -> bytes:
    return httpx.get(f"{emulator.base_url}/_emulator/objects", params={"uri": uri}).content


def test_put_then_get_round_trips_and_a_second_put_is_harmless(
    blobs: AzureBlobClient, emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    source = _shard(tmp_path)
    url = f"{FOLDER}/file/shard-0001.jsonl"
    assert blobs.put_blob(url, source) == source.stat().st_size
    assert blobs.put_blob(url, source) == source.stat().st_size
    assert _object(emulator, url) == source.read_bytes()
    dest = tmp_path / "down" / "copy.jsonl"
    assert blobs.get_blob(url, dest) == source.stat().st_size
    assert dest.read_bytes() == source.read_bytes()
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left behind


def test_delete_removes_the_blob_and_deleting_again_is_harmless(
    blobs: AzureBlobClient, emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    url = f"{FOLDER}/file/gone.jsonl"
    blobs.put_blob(url, _shard(tmp_path, 10))
    waits: list[float] = []
    blobs.sleep = waits.append
    fault = {"kind": "server_error", "status": 503, "routes": ["blob_delete"], "count": 1}
    httpx.post(f"{emulator.base_url}/_emulator/faults", json=fault).raise_for_status()
    assert blobs.delete_blob(url) is True
    assert len(waits) == 1  # the 503 was retried
    with pytest.raises(BlobStatusError, match="HTTP 404 BlobNotFound"):
        blobs.get_blob(url, tmp_path / "x")
    assert blobs.delete_blob(url) is False


def test_a_missing_blob_is_one_line_naming_the_url(blobs: AzureBlobClient, tmp_path: Path) -> None:
    with pytest.raises(BlobStatusError) as caught:
        blobs.get_blob(f"{FOLDER}/nothing.jsonl", tmp_path / "x")
    error = caught.value
    assert (error.status_code, error.code, error.retryable) == (404, "BlobNotFound", False)
    assert str(error) == (
        f"GET {FOLDER}/nothing.jsonl: HTTP 404 BlobNotFound: The specified blob does not exist."
    )
    assert not (tmp_path / "x").exists()


def test_server_errors_and_cut_downloads_are_retried(
    blobs: AzureBlobClient, emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    waits: list[float] = []
    blobs.sleep = waits.append
    source = _shard(tmp_path, 50_000)
    url = f"{FOLDER}/retried.jsonl"
    faults = [
        {"kind": "server_error", "status": 503, "count": 2, "routes": ["blob_put"]},
        {"kind": "reset_download", "after_bytes": 1000, "routes": ["blob_get"]},
    ]
    httpx.post(f"{emulator.base_url}/_emulator/faults", json=faults).raise_for_status()
    blobs.put_blob(url, source)
    assert blobs.get_blob(url, tmp_path / "copy.jsonl") == source.stat().st_size
    assert (tmp_path / "copy.jsonl").read_bytes() == source.read_bytes()
    assert len(waits) == 3
    fired = httpx.get(f"{emulator.base_url}/_emulator/counters").json()["faults_fired"]
    assert fired == {"server_error": 2, "reset_download": 1}


def test_refusals_are_not_retried(emulator: EmbeddedEmulator, tmp_path: Path) -> None:
    with AzureBlobClient(sas_token=None, endpoint=f"{emulator.base_url}/azure-blob/acct") as bare:
        bare.sleep = pytest.fail  # type: ignore[assignment]
        with pytest.raises(BlobStatusError) as caught:
            bare.put_blob(f"{FOLDER}/x.jsonl", _shard(tmp_path))
    assert caught.value.status_code == 401 and caught.value.code == "NoAuthenticationInformation"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"{FOLDER}/x.jsonl?sv=1&sig=abc", "must carry no query string"),
        ("https://example.com/batches/x.jsonl", "not an https://ACCOUNT.blob.core.windows.net"),
        ("http://acct.blob.core.windows.net/batches/x", "not an https://ACCOUNT.blob.core"),
        ("https://acct.blob.core.windows.net/Bad_Name/x", "names no valid container"),
    ],
)
def test_blob_urls_are_checked_before_sending(
    blobs: AzureBlobClient, tmp_path: Path, url: str, reason: str
) -> None:
    with pytest.raises(BlobConfigError, match=reason) as caught:
        blobs.put_blob(url, _shard(tmp_path))
    assert "sig=abc" not in str(caught.value)


def test_endpoint_and_token_are_checked(tmp_path: Path) -> None:
    with pytest.raises(BlobConfigError, match="plain http is allowed on loopback only"):
        AzureBlobClient(sas_token=TOKEN, endpoint="http://storage.internal:10000/acct")
    with pytest.raises(BlobConfigError, match="no query"):
        AzureBlobClient(sas_token=TOKEN, endpoint="http://127.0.0.1:10000/acct?sig=x")
    with pytest.raises(BlobConfigError) as caught:
        AzureBlobClient(sas_token="sv=2024-08-04&sp=rw Password1")
    assert "Password1" not in str(caught.value)


def test_the_sas_token_reaches_no_message_repr_or_log(
    blobs: AzureBlobClient,
    emulator: EmbeddedEmulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = [repr(blobs)]
    source = _shard(tmp_path)
    blobs.put_blob(f"{FOLDER}/seen.jsonl", source)
    blobs.get_blob(f"{FOLDER}/seen.jsonl", tmp_path / "seen.jsonl")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with AzureBlobClient(
        sas_token=f"?{TOKEN}", endpoint=f"http://127.0.0.1:{closed}/acct", max_retry_seconds=0
    ) as unreachable:
        seen.append(repr(unreachable))
        attempts: list[tuple[AzureBlobClient, str]] = [
            (blobs, f"{FOLDER}/absent.jsonl"),
            (unreachable, f"{FOLDER}/seen.jsonl"),
        ]
        for client, url in attempts:
            with pytest.raises(BlobStorageError) as caught:
                client.get_blob(url, tmp_path / "never")
            seen += [str(caught.value), repr(caught.value)]
        with pytest.raises(BlobTransportError) as deleting:
            unreachable.delete_blob(f"{FOLDER}/seen.jsonl")
        seen += [str(deleting.value), repr(deleting.value)]
    assert isinstance(caught.value, BlobTransportError)
    assert blobs.delete_blob(f"{FOLDER}/seen.jsonl")
    seen.append(caplog.text)
    assert "HTTP Request: PUT" in caplog.text  # httpx did log the calls, without the token
    assert "HTTP Request: DELETE" in caplog.text
    assert not [text for text in seen if any(secret in text for secret in SECRETS)]
