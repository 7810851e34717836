"""Validation failure, expiry with partial results, and restarts on the same state directory."""

from __future__ import annotations

import json

import httpx
from emulator_helpers import (
    chat_line,
    create_openai_batch,
    download,
    jsonl,
    upload,
    wait_progress,
    wait_terminal,
)

OPENAI = {"provider": "openai"}


def test_validation_failure_reports_line_numbers(http: httpx.Client) -> None:
    lines = [
        json.dumps(chat_line("a", "fine")),
        "{not json",
        json.dumps(chat_line("a", "duplicate id")),
        json.dumps(chat_line("c", "other model", model="gpt-4o")),
        json.dumps({**chat_line("d", "wrong url"), "url": "/v1/embeddings"}),
    ]
    file_id = upload(http, ("\n".join(lines) + "\n").encode())
    created = http.post(
        "/v1/batches",
        json={
            "model": "openai/gpt-4o-mini",
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
        },
    ).json()
    batch = wait_terminal(http, created["id"])
    assert batch["status"] == "failed" and batch["failed_at"]
    found = [(e["line"], e["code"]) for e in batch["errors"]["data"]]
    assert found == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "mismatched_model"),
        (5, "invalid_url"),
    ]
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert "output_file_id" not in batch and "error_file_id" not in batch


def test_too_many_requests_fail_validation(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(max_requests_per_batch=2))
    batch = wait_terminal(
        http, create_openai_batch(http, [chat_line(f"r{i}", "x") for i in range(3)])["id"]
    )
    assert batch["status"] == "failed"
    assert [e["code"] for e in batch["errors"]["data"]] == ["too_many_requests"]


def test_completion_window_expiry_keeps_partial_output(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=20, completion_window_seconds=0.5))
    lines = [chat_line(f"r{i}", f"q{i}") for i in range(40)]
    batch = wait_terminal(http, create_openai_batch(http, lines)["id"])
    # the deadline is the scaled window; expires_at reports the provider's real 24 h one
    assert batch["status"] == "expired" and batch["expires_at"] == batch["created_at"] + 86400
    assert batch["expired_at"] < batch["expires_at"]
    output = download(http, batch["output_file_id"])
    errors = download(http, batch["error_file_id"])
    assert 0 < len(output) == batch["request_counts"]["completed"] < 40
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert all(e["response"] is None for e in errors)
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(line["custom_id"] for line in lines)


def test_admin_expire_now(emulator_factory, client_for) -> None:
    http = client_for(emulator_factory(requests_per_second=40))
    batch_id = create_openai_batch(http, [chat_line(f"r{i}", "x") for i in range(40)])["id"]
    wait_progress(http, batch_id)
    assert http.post(f"/_emulator/batches/{batch_id}/expire").json()["expire_requested"] is True
    batch = wait_terminal(http, batch_id)
    assert batch["status"] == "expired"
    assert len(download(http, batch["error_file_id"])) == 40 - batch["request_counts"]["completed"]
    assert http.post(f"/_emulator/batches/{batch_id}/expire").status_code == 409


def test_restart_continues_files_and_batches(emulator_factory, client_for, tmp_path) -> None:
    state = tmp_path / "state"
    first = emulator_factory(state_dir=state, requests_per_second=40)
    http = client_for(first)
    lines = [chat_line(f"r{i}", f"q{i}") for i in range(40)]
    batch_id = create_openai_batch(http, lines, metadata={"bp_shard": "s1"})["id"]
    done_id = create_openai_batch(http, [chat_line("d", "done")])["id"]
    wait_terminal(http, done_id)
    wait_progress(http, batch_id)
    first.stop()
    # A crash can leave lines past the recorded progress; the restart must drop them.
    with (state / "batches" / f"{batch_id}.out.part").open("ab") as part:
        part.write(b'{"custom_id": "r0", "half a line')

    second = emulator_factory(state_dir=state, requests_per_second=400)
    http = client_for(second)
    batch = wait_terminal(http, batch_id)
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 40
    output = download(http, batch["output_file_id"])
    assert sorted(line["custom_id"] for line in output) == sorted(
        line["custom_id"] for line in lines
    )
    assert wait_terminal(http, done_id)["status"] == "completed"
    listed = http.get("/v1/batches", params=OPENAI).json()["data"]
    assert {b["id"] for b in listed} == {batch_id, done_id}
    counters = http.get("/_emulator/counters").json()
    assert counters["batches_created"] == 2 and counters["batches_by_metadata"] == {
        "bp_shard": {"s1": 1}
    }


def test_upload_streams_to_disk(http: httpx.Client, emulator) -> None:
    content = jsonl([chat_line(f"r{i}", "y" * 200) for i in range(20_000)])
    file_id = upload(http, content)
    stored = emulator.state_dir / "files" / f"{file_id}.data"
    assert stored.read_bytes() == content
    assert http.get(f"/v1/files/{file_id}/content", params=OPENAI).content == content
