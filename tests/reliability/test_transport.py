"""Transport, through the pipeline's resources: TLS is verified by default, a private CA bundle
can be configured (and then the whole flow runs over https), and plain http goes only to a
loopback gateway unless explicitly allowed. The client-level checks live in
tests/gateway/test_gateway_tls.py and tests/gateway/test_gateway_helpers.py."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from pipeline_support import chat_lines, write_input
from reliability_support import (
    assert_invariant,
    assert_one_batch_per_shard,
    assert_parquet_complete,
    counters,
)

pytest.importorskip("cryptography")
from driver_support import driver, poll_and_collect, submit
from tls_certs import self_signed


@pytest.fixture
def https_emulator(emulator_factory, tmp_path: Path):
    """The emulator serving https with a certificate no system CA store trusts."""
    cert, key = self_signed(tmp_path)
    return emulator_factory(tls_certfile=cert, tls_keyfile=key), cert


def _trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def test_tls_is_verified_by_default(https_emulator, instance, data_root: Path) -> None:
    emulator, cert = https_emulator
    assert emulator.base_url.startswith("https://")
    write_input(data_root, "secure", chat_lines(3))
    message = submit(driver(instance, emulator.base_url, data_root), "secure")
    assert message is not None and "\n" not in message and "not trusted" in message, message
    seen = counters(emulator.base_url, verify=_trusting(cert))
    assert seen["requests_by_route"] == {}  # refused in the handshake: no request was made


def test_a_private_ca_bundle_runs_the_whole_flow_over_https(
    https_emulator, instance, data_root: Path
) -> None:
    emulator, cert = https_emulator
    write_input(data_root, "secure", chat_lines(6, fail={2: 500}))
    drive = driver(instance, emulator.base_url, data_root, ca_bundle=str(cert))
    assert submit(drive, "secure") is None
    assert poll_and_collect(drive, ["secure"]) == {"secure": None}
    assert_one_batch_per_shard(emulator.base_url, data_root, ["secure"], verify=_trusting(cert))
    assert_invariant(data_root, "secure", 6)
    assert assert_parquet_complete(data_root, "secure") == (5, 1)


def test_plain_http_to_a_remote_host_is_refused_before_anything_is_sent(
    instance, data_root: Path
) -> None:
    write_input(data_root, "remote", chat_lines(2))
    drive = driver(instance, "http://gateway.example.com:8080", data_root)
    message = submit(drive, "remote")
    assert message is not None and "refusing plain http" in message and "\n" not in message
    tick = drive.evaluate(drive.names.status_sensor)  # the sensor says so and carries on
    assert "gateway unavailable: refusing plain http" in (tick.skip_message or "")


def _outward_ipv4() -> str | None:
    """A non-loopback address of this machine (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_plain_http_to_a_remote_host_only_when_explicitly_allowed(
    emulator_factory, instance, data_root: Path
) -> None:
    address = _outward_ipv4()
    if address is None:
        pytest.skip("no non-loopback interface to serve on")
    emulator = emulator_factory(host=address)
    write_input(data_root, "lan", chat_lines(3))
    refused = submit(driver(instance, emulator.base_url, data_root), "lan")
    assert refused is not None and "refusing plain http" in refused
    assert counters(emulator.base_url)["requests_by_route"] == {}
    drive = driver(instance, emulator.base_url, data_root, allow_insecure_http=True)
    assert submit(drive, "lan") is None
    assert poll_and_collect(drive, ["lan"]) == {"lan": None}
    assert_invariant(data_root, "lan", 3)
