"""TLS is verified by default, a private CA bundle can be trusted, and a bad bundle is a config
error; checked against a real HTTPS server on loopback with a freshly made self-signed cert."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from batch_pipeline.gateway import BifrostClient, GatewayConfigError, GatewayTLSError

pytest.importorskip("cryptography")
from tls_certs import self_signed


class BatchHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"id": "batch_tls", "status": "completed"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert_path, key_path = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BatchHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_untrusted_certificate_is_refused(https_server: tuple[str, Path]) -> None:
    url, _ = https_server
    with (
        BifrostClient(url) as client,
        pytest.raises(GatewayTLSError, match="not trusted") as info,
    ):
        client.retrieve_batch("batch_tls", provider="openai")
    assert info.value.attempts == 1


def test_private_ca_bundle_is_trusted(https_server: tuple[str, Path]) -> None:
    url, cert_path = https_server
    with BifrostClient(url, verify=str(cert_path)) as client:
        assert client.retrieve_batch("batch_tls", provider="openai").status == "completed"


def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="cannot load CA bundle"):
        BifrostClient("https://gw.example.com", verify=str(tmp_path / "absent.pem"))
