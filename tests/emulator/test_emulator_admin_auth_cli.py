"""Auth, admin counters / reset / settings, the embedded server's lifecycle and the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from emulator_helpers import chat_line, check_schema, create_openai_batch, upload, wait_terminal

from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig, EmulatorStartError
from batch_pipeline.emulator.cli import build_config, parse_fault
from batch_pipeline.emulator.config import RUNTIME_KNOBS

KEY = "sk-bf-test-key-123"
OPENAI = {"provider": "openai"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client on an emulator that requires KEY."""
    config = EmulatorConfig.fast(state_dir=tmp_path_factory.mktemp("auth"), api_keys=(KEY,))
    with EmbeddedEmulator(config) as emulator, httpx.Client(base_url=emulator.base_url) as client:
        yield client


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"x-bf-vk": KEY}, 200),
        ({"x-api-key": KEY}, 200),
    ],
)
def test_required_key(keyed: httpx.Client, headers: dict, status: int) -> None:
    http = keyed
    response = http.get("/v1/batches", params=OPENAI, headers=headers)
    assert response.status_code == status
    if status == 401:
        body = check_schema(response.json(), "BifrostError")
        assert body["status_code"] == 401 and KEY not in response.text
    assert http.get("/_emulator/health").status_code == 200


VIRTUAL = "sk-bf-vk-456"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"Bearer {KEY}"}, 401),  # no virtual key
        ({"x-bf-vk": VIRTUAL}, 401),  # no API key
        ({"x-bf-vk": KEY}, 401),  # the API key is not a virtual key
        ({"Authorization": f"Bearer {VIRTUAL}", "x-bf-vk": VIRTUAL}, 401),
        ({"Authorization": f"Bearer {KEY}", "x-bf-vk": "wrong"}, 401),
        ({"Authorization": f"Bearer {KEY}", "x-bf-vk": VIRTUAL}, 200),
    ],
)
def test_required_key_and_virtual_key(
    emulator_factory, client_for, headers: dict, status: int
) -> None:
    emulator = emulator_factory(api_keys=(KEY,), virtual_keys=(VIRTUAL,))
    response = client_for(emulator).get("/v1/batches", params=OPENAI, headers=headers)
    assert response.status_code == status, response.text
    assert KEY not in response.text and VIRTUAL not in response.text


def test_key_never_shown(emulator_factory, client_for) -> None:
    emulator = emulator_factory(api_keys=(KEY,))
    config = client_for(emulator).get("/_emulator/config").json()
    assert config["auth_required"] is True
    assert KEY not in str(config) and KEY not in repr(emulator.config)


def test_counters_and_reset(http: httpx.Client) -> None:
    create_openai_batch(http, [chat_line("a", "b")], metadata={"bp_shard": "abc", "job": "j"})
    create_openai_batch(http, [chat_line("a", "c")], metadata={"bp_shard": "abc"})
    counters = http.get("/_emulator/counters").json()
    assert counters["batches_created"] == 2 and counters["batches_by_provider"] == {"openai": 2}
    assert counters["batches_by_metadata"] == {"bp_shard": {"abc": 2}, "job": {"j": 1}}
    assert counters["files_uploaded"] == 2 and counters["requests_by_route"]["batch_create"] == 2
    assert http.post("/_emulator/reset").json()["state_cleared"] is False
    assert http.get("/_emulator/counters").json()["batches_created"] == 0
    assert len(http.get("/v1/batches", params=OPENAI).json()["data"]) == 2
    http.post("/_emulator/reset", json={"state": True})
    assert http.get("/v1/batches", params=OPENAI).json()["data"] == []


def test_runtime_speed_change(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=0.5))
    batch_id = create_openai_batch(http, [chat_line(f"r{i}", "x") for i in range(20)])["id"]
    settings = http.patch("/_emulator/config", json={"requests_per_second": 1000}).json()
    assert settings["requests_per_second"] == 1000
    assert wait_terminal(http, batch_id)["status"] == "completed"
    assert set(settings) - {"auth_required"} >= RUNTIME_KNOBS


def test_default_timing_finishes_100_requests_in_about_10_seconds() -> None:
    config = EmulatorConfig()
    seconds = config.validation_delay + 100 / config.requests_per_second + config.finalizing_delay
    assert seconds <= 10


def test_stop_releases_port_and_bind_errors_are_clear(tmp_path: Path) -> None:
    emulator = EmbeddedEmulator(EmulatorConfig.fast(state_dir=tmp_path)).start()
    port = emulator.port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.raises(EmulatorStartError, match=f"cannot listen on 127.0.0.1:{taken}"):
            EmbeddedEmulator(EmulatorConfig.fast(port=taken)).start()
    emulator.stop()
    emulator.stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_parse_fault_and_build_config(tmp_path: Path) -> None:
    assert parse_fault("rate_limit:count=3,retry_after=2,routes=batch_list+file_content") == {
        "kind": "rate_limit",
        "count": "3",
        "retry_after": "2",
        "routes": ("batch_list", "file_content"),
    }
    assert parse_fault("slow:count=always")["count"] is None
    with pytest.raises(ValueError, match="unknown fault kind"):
        parse_fault("explode")
    from batch_pipeline.cli import build_parser

    args = build_parser().parse_args(
        [
            "emulator",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--fast",
            "--error-rate",
            "0.5",
            "--fault",
            "server_error:status=502",
        ]
    )
    config = build_config(args)
    assert config.error_rate == 0.5 and config.validation_delay < 0.1
    assert config.faults[0].status == 502
    bad = build_parser().parse_args(["emulator", "--error-rate", "2"])
    with pytest.raises(ValueError, match="error_rate"):
        build_config(bad)


def test_help_documents_every_knob() -> None:
    from batch_pipeline.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["emulator"]  # type: ignore[union-attr]
    text = sub.format_help()
    skipped = {"api_keys", "virtual_keys", "faults"}
    for name in set(EmulatorConfig.model_fields) - skipped:
        assert "--" + name.replace("_", "-") in text, name
    assert "--api-key-env" in text and "--virtual-key-env" in text and "--fault" in text


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "EMU_KEYS": KEY}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batch_pipeline.cli",
            "emulator",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--fast",
            "--api-key-env",
            "EMU_KEYS",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split("listening on ", 1)[1].split(" ", 1)[0]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert httpx.get(f"{url}/v1/batches", params=OPENAI).status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert KEY not in line + (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_usage_error_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "batch_pipeline.cli",
            "emulator",
            "--fault",
            "nope",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown fault kind" in result.stderr


def test_context_manager_restarts_on_same_state_dir(tmp_path: Path) -> None:
    with EmbeddedEmulator(EmulatorConfig.fast(state_dir=tmp_path)) as emulator:
        file_id = upload(httpx.Client(base_url=emulator.base_url), b'{"a": 1}\n')
    with EmbeddedEmulator(EmulatorConfig.fast(state_dir=tmp_path)) as emulator:
        response = httpx.get(f"{emulator.base_url}/v1/files/{file_id}/content", params=OPENAI)
        assert response.content == b'{"a": 1}\n'
