"""Secrets: with a distinctive key configured, the whole pipeline runs, including failing
requests, gateway faults, an unknown create outcome, a rejected file and a wrong key; then every
place a key could land is searched: DAGSTER_HOME (event logs, run storage, compute logs), the
data root, captured stdout/stderr, log records and exception texts. The key is nowhere."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import dagster as dg
import pytest
from driver_support import cli_driver, driver, poll_and_collect, submit
from pipeline_support import anthropic_lines, chat_lines, write_input
from reliability_support import arm, counters

from batch_pipeline.gateway import BifrostClient, GatewayError


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_key_reaches_no_file_log_output_or_message(
    emulator_factory, tmp_path: Path, monkeypatch, capfd, caplog
) -> None:
    key = f"sk-bf-RELIABILITY-{secrets.token_hex(12)}"
    wrong_key = f"sk-bf-WRONG-{secrets.token_hex(12)}"
    emulator = emulator_factory(api_keys=(key,))
    home, data_root = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # a real on-disk instance for every run
    monkeypatch.setenv("BIFROST_API_KEY", key)
    caplog.set_level(logging.DEBUG)  # every logger, the gateway's request log included

    sources = [
        write_input(data_root, "chat", chat_lines(8, fail={2: 500, 5: 400})),
        write_input(data_root, "claude", anthropic_lines(4, fail={3: 500})),
        write_input(data_root, "broken", [*chat_lines(2), "{not json"]),
    ]
    arm(emulator.base_url, kind="server_error", routes=["file_upload"], count=2, status=503)
    arm(emulator.base_url, kind="server_error", routes=["batch_create"], count=1, status=502)
    arm(emulator.base_url, kind="rate_limit", routes=["batch_retrieve"], count=2, retry_after=0.1)
    arm(emulator.base_url, kind="reset_download", routes=["file_content"], after_bytes=50)

    def run(files: list[Path]):
        with dg.DagsterInstance.get() as instance:
            drive = cli_driver(instance, emulator.base_url, data_root)
            return drive.run(files, poll_interval=0.1, progress=print)

    first = run(sources)  # chat's create fails with an unknown outcome; broken is rejected
    failed = {f.name: f.message for f in first.files if not f.ok}
    assert set(failed) == {"chat", "broken"}, first.render()
    # chat again, on the same instance, without waiting out the window of its unknown create
    with dg.DagsterInstance.get() as instance:
        drive = driver(
            instance, emulator.base_url, data_root, {"submit": {"create_settle_seconds": 0.0}}
        )
        assert submit(drive, "chat") is None
        assert poll_and_collect(drive, ["chat"]) == {"chat": None}
    texts = [first.render(), *failed.values()]

    monkeypatch.setenv("BIFROST_API_KEY", wrong_key)  # a wrong key: refused, not echoed
    write_input(data_root, "later", chat_lines(2))
    refused = run([data_root / "inbox" / "later.jsonl"])
    assert not refused.ok
    texts += [refused.render(), refused.files[0].message]
    with BifrostClient(emulator.base_url, api_key=key) as client:
        for call in (
            lambda: client.retrieve_batch("batch_missing", provider="openai"),
            lambda: client.create_batch(model="openai/m", endpoint="/v1/nope", input_file_id="f"),
        ):
            with pytest.raises(GatewayError) as info:
                call()
            texts += [str(info.value), repr(info.value), repr(client)]

    # The search below would find a key: the same places do hold the run's other details.
    batch_ids = [b for m in (data_root / "batches").glob("*.json") for b in [m.read_text()]]
    assert batch_ids and _files_containing(home, b"submitted_batches")
    assert counters(emulator.base_url)["faults_fired"]["server_error"] == 3
    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    texts += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    requests_logged = [r.getMessage() for r in caplog.records if r.name == "batch_pipeline.gateway"]
    assert any("POST /v1/batches" in m for m in requests_logged)  # requests are logged...
    caplog.clear()  # (a failure below then prints the leak, not megabytes of debug log)

    for secret in (key, wrong_key):
        assert _files_containing(home, secret.encode()) == []
        assert _files_containing(data_root, secret.encode()) == []
        assert [_around(t, secret) for t in texts if secret in t] == []
    assert [t for t in texts if "bearer " in t.lower()] == []  # ...never with their auth header


def _around(text: str, secret: str) -> str:
    at = text.find(secret)
    return text[max(0, at - 100) : at + len(secret) + 100]
