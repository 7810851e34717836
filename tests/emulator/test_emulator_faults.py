"""Every injected fault is reachable, at start (config) and at runtime (admin route)."""

from __future__ import annotations

import logging
import time

import httpx
import openai
import pytest
from emulator_helpers import (
    chat_line,
    check_schema,
    create_openai_batch,
    jsonl,
    upload,
    wait_terminal,
)

from batch_pipeline.emulator import EmbeddedEmulator, EmulatorConfig, Fault

OPENAI = {"provider": "openai"}
CHAT = "/v1/chat/completions"


def _arm(http: httpx.Client, **fault: object) -> None:
    response = http.post("/_emulator/faults", json=fault)
    assert response.status_code == 200, response.text


def test_rate_limit_on_chosen_route_with_retry_after(http: httpx.Client) -> None:
    _arm(http, kind="rate_limit", count=2, retry_after=3, routes=["batch_list"])
    for _ in range(2):
        response = http.get("/v1/batches", params=OPENAI)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        body = check_schema(response.json(), "BifrostError")
        assert body["status_code"] == 429 and body["extra_fields"]["request_type"] == "batch_list"
    assert http.get("/v1/files", params=OPENAI).status_code == 200
    assert http.get("/v1/batches", params=OPENAI).status_code == 200
    assert http.get("/_emulator/counters").json()["faults_fired"] == {"rate_limit": 2}


def test_sdk_honours_retry_after(emulator: EmbeddedEmulator, http: httpx.Client) -> None:
    created = create_openai_batch(http, [chat_line("a", "b")])
    _arm(http, kind="rate_limit", count=1, retry_after=0, routes=["batch_retrieve"])
    sdk = openai.OpenAI(base_url=f"{emulator.base_url}/v1", api_key="x", max_retries=2)
    assert sdk.batches.retrieve(created["id"], extra_query=OPENAI).id == created["id"]
    assert http.get("/_emulator/counters").json()["requests_by_route"]["batch_retrieve"] == 2


def test_server_error_burst(emulator_factory, client_for) -> None:
    fault = Fault(kind="server_error", count=3, status=503)
    http = client_for(emulator_factory(faults=(fault,)))
    statuses = [http.get("/v1/files", params=OPENAI).status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 200]


def test_slow_response_hits_client_read_timeout(http: httpx.Client) -> None:
    _arm(http, kind="slow", delay=0.5, count=1, routes=["batch_list"])
    with pytest.raises(httpx.ReadTimeout):
        http.get("/v1/batches", params=OPENAI, timeout=0.1)
    assert http.get("/v1/batches", params=OPENAI, timeout=1).status_code == 200


def test_slow_with_a_latency_range_waits_a_drawn_time_within_it(http: httpx.Client) -> None:
    _arm(http, kind="slow", delay=0.2, delay_max=0.6, count=None, routes=["batch_list"])
    took = []
    for _ in range(6):
        started = time.monotonic()
        assert http.get("/v1/batches", params=OPENAI, timeout=5).status_code == 200
        took.append(time.monotonic() - started)
    assert min(took) >= 0.2 and max(took) < 0.6 + 0.3  # + this machine's own latency
    assert max(took) - min(took) > 0.05  # drawn, not fixed
    assert http.get("/v1/files", params=OPENAI, timeout=0.15).status_code == 200  # other routes
    refused = http.post("/_emulator/faults", json={"kind": "slow", "delay": 2, "delay_max": 1})
    assert refused.status_code == 400


def test_connection_reset_mid_download(http: httpx.Client) -> None:
    batch = wait_terminal(
        http, create_openai_batch(http, [chat_line(f"r{i}", "x") for i in range(5)])["id"]
    )
    url = f"/v1/files/{batch['output_file_id']}/content"
    full = http.get(url, params=OPENAI).content
    _arm(http, kind="reset_download", after_bytes=100)
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("GET", url, params=OPENAI) as response,
    ):
        assert response.headers["content-length"] == str(len(full))
        for chunk in response.iter_raw():
            received.extend(chunk)
    assert bytes(received) == full[:100]
    assert http.get(url, params=OPENAI).content == full


def test_malformed_output_lines(http: httpx.Client) -> None:
    _arm(http, kind="malformed_output", lines=2)
    lines = [chat_line(f"r{i}", f"x{i}") for i in range(5)]
    batch = wait_terminal(http, create_openai_batch(http, lines)["id"])
    body = check_schema(
        http.get(f"/v1/batches/{batch['id']}/results", params=OPENAI).json(), "BatchResultsResponse"
    )
    assert [e["line"] for e in body["extra_fields"]["parse_errors"]] == [1, 2]
    assert len(body["results"]) == 3


def test_faults_listed_and_cleared(http: httpx.Client) -> None:
    _arm(http, kind="slow", delay=2, count=None)
    assert http.get("/_emulator/faults").json()["faults"][0]["remaining"] is None
    assert http.delete("/_emulator/faults").json() == {"faults": []}
    assert http.get("/v1/files", params=OPENAI, timeout=1).status_code == 200
    assert http.post("/_emulator/faults", json={"kind": "nope"}).status_code == 400


def test_runtime_retrieve_404_window(http: httpx.Client) -> None:
    assert http.patch("/_emulator/config", json={"retrieve_404_seconds": 30}).status_code == 200
    created = create_openai_batch(http, [chat_line("a", "b")])
    response = http.get(f"/v1/batches/{created['id']}", params=OPENAI)
    assert response.status_code == 404
    assert (
        check_schema(response.json(), "BifrostError")["error"]["message"]
        == f"No such batch: {created['id']}"
    )
    assert http.patch("/_emulator/config", json={"port": 1}).status_code == 400


def test_slow_answer_handles_the_create_then_answers_late(http: httpx.Client) -> None:
    file_id = upload(http, jsonl([chat_line("a", "b")]))
    _arm(http, kind="slow_answer", delay=1.0, routes=["batch_create"])
    body = {"model": "openai/gpt-4o-mini", "input_file_id": file_id, "endpoint": CHAT}
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/batches", json=body, timeout=0.2)
    # the create was processed although its answer never arrived
    listed = http.get("/v1/batches", params=OPENAI).json()["data"]
    assert [b["input_file_id"] for b in listed] == [file_id]
    counters = http.get("/_emulator/counters").json()
    assert counters["batches_created"] == 1 and counters["faults_fired"] == {"slow_answer": 1}


def test_stall_download_pauses_then_completes(http: httpx.Client) -> None:
    batch = wait_terminal(
        http, create_openai_batch(http, [chat_line(f"r{i}", "x") for i in range(5)])["id"]
    )
    url = f"/v1/files/{batch['output_file_id']}/content"
    full = http.get(url, params=OPENAI).content
    _arm(http, kind="stall_download", after_bytes=100, delay=0.5)
    started = time.monotonic()
    with http.stream("GET", url, params=OPENAI) as response:
        chunks = list(response.iter_raw())
    assert chunks[0] == full[:100] and b"".join(chunks) == full
    assert time.monotonic() - started >= 0.5


def test_skip_lets_the_first_requests_through(http: httpx.Client) -> None:
    _arm(http, kind="server_error", skip=2, count=1, status=502, routes=["file_list"])
    statuses = [http.get("/v1/files", params=OPENAI).status_code for _ in range(4)]
    assert statuses == [200, 200, 502, 200]


def test_tls_needs_both_certificate_and_key(tmp_path) -> None:
    with pytest.raises(ValueError, match="go together"):
        EmulatorConfig(tls_certfile=tmp_path / "cert.pem")


def test_a_client_gone_mid_body_is_dropped_quietly(
    emulator: EmbeddedEmulator, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", emulator.port)) as raw:
        raw.sendall(
            b"POST /v1/batches HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n" + b'{"model": "openai/'
        )
    deadline = time.monotonic() + 5
    while http.get("/_emulator/counters").json()["requests_by_route"].get("batch_create") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.1)
    assert http.get("/_emulator/counters").json()["batches_created"] == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
