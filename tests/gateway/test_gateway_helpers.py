"""Pure helpers of the gateway layer: retry timing, configuration checks, the batch view."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from batch_pipeline.gateway import (
    BatchCancelResponse,
    BatchCreateResponse,
    BatchRequestCounts,
    BatchRetrieveResponse,
    BatchView,
    BifrostError,
    GatewayConfigError,
    GatewayConnectionError,
    NormalizedCounts,
    RequestFileError,
    RetryPolicy,
    ServerError,
    is_terminal,
    normalize_status,
    parse_retry_after,
)
from batch_pipeline.gateway.config import checked_base_url, checked_secret, is_loopback_host
from batch_pipeline.gateway.errors import BadRequestError, RateLimitError
from batch_pipeline.gateway.inline_body import InlineRequestsBody

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 0.25 ", 0.25),
        ("0", 0.0),
        ("-5", 0.0),
        ("Wed, 01 Jan 2025 12:00:07 GMT", 7.0),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 10, 30])
def test_backoff_is_full_jitter_under_an_exponential_cap(attempt: int) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(attempt)
    ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
    delays = [policy.backoff(attempt, rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling / 2  # actually spread over the range, not a constant


def _status_error(cls: type, status: int, retry_after: float | None = None) -> object:
    return cls(
        method="GET",
        path="/v1/batches/b",
        status_code=status,
        error=BifrostError(),
        provider="openai",
        request_type="batch_retrieve",
        retry_after=retry_after,
    )


def test_next_delay_honours_retry_after_and_the_budget() -> None:
    policy = RetryPolicy(max_total_seconds=10.0)
    limited = _status_error(RateLimitError, 429, retry_after=4.0)
    assert policy.next_delay(limited, attempt=1, elapsed=0.0) == 4.0
    assert policy.next_delay(limited, attempt=1, elapsed=7.0) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_next_delay_retries_server_errors(status: int) -> None:
    delay = RetryPolicy().next_delay(_status_error(ServerError, status), attempt=1, elapsed=0.0)
    assert delay is not None and 0.0 <= delay <= 0.5


@pytest.mark.parametrize(
    "error",
    [
        _status_error(BadRequestError, 400),
        _status_error(ServerError, 501),
    ],
)
def test_next_delay_gives_up_on_permanent_errors(error: object) -> None:
    assert RetryPolicy().next_delay(error, attempt=1, elapsed=0.0) is None


def test_next_delay_retries_transport_errors() -> None:
    error = GatewayConnectionError("GET", "/v1/files", "reset", request_sent=True)
    assert RetryPolicy().next_delay(error, attempt=2, elapsed=0.0) is not None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("[::1]", True),
        ("api.localhost", True),
        ("10.0.0.1", False),
        ("gateway.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("http://localhost:8080/", "http://localhost:8080/"),
        ("http://[::1]:9000/v1", "http://[::1]:9000/"),
        ("https://gw.example.com/bifrost/v1/", "https://gw.example.com/bifrost/"),
        ("https://gw.example.com", "https://gw.example.com/"),
    ],
)
def test_checked_base_url_accepts(base_url: str, expected: str) -> None:
    assert str(checked_base_url(base_url, allow_insecure_http=False)) == expected


@pytest.mark.parametrize(
    ("base_url", "fragment"),
    [
        ("http://gateway.example.com:8080", "refusing plain http"),
        ("http://10.1.2.3", "refusing plain http"),
        ("ftp://127.0.0.1", "must look like"),
        ("127.0.0.1:8080", "must look like"),
        ("https://user:pw@gw.example.com", "user:password"),
    ],
)
def test_checked_base_url_refuses(base_url: str, fragment: str) -> None:
    with pytest.raises(GatewayConfigError, match=fragment) as info:
        checked_base_url(base_url, allow_insecure_http=False)
    assert "\n" not in str(info.value)
    assert "pw" not in str(info.value)


def test_insecure_http_can_be_allowed_explicitly() -> None:
    url = checked_base_url("http://gw.internal:8080", allow_insecure_http=True)
    assert url.host == "gw.internal"


@pytest.mark.parametrize("key", ["", "sk key", "sk-\nkey", "sk-ключ"])
def test_checked_secret_refuses_unusable_keys_without_echoing_them(key: str) -> None:
    with pytest.raises(GatewayConfigError) as info:
        checked_secret("api_key", key)
    assert key.strip() == "" or key not in str(info.value)


@pytest.mark.parametrize(
    ("status", "done", "terminal"),
    [
        ("completed", None, True),
        ("failed", None, True),
        ("expired", None, True),
        ("cancelled", None, True),
        ("canceled", None, True),
        ("ended", None, True),
        ("validating", None, False),
        ("in_progress", None, False),
        ("finalizing", None, False),
        ("cancelling", None, False),
        ("something_new", None, False),
        ("something_new", True, True),
        (None, True, True),
        (None, None, False),
        ("in_progress", False, False),
    ],
)
def test_is_terminal(status: str | None, done: bool | None, terminal: bool) -> None:
    assert is_terminal(status, done) is terminal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("canceled", "cancelled"),
        ("Completed", "completed"),
        ("New_State", "new_state"),
        (None, "unknown"),
    ],
)
def test_normalize_status(raw: str | None, normal: str) -> None:
    assert normalize_status(raw) == normal


@pytest.mark.parametrize(
    ("provider", "counts", "expected"),
    [
        (  # OpenAI running: completed = succeeded, the rest pending
            "openai",
            {"total": 10, "completed": 6, "failed": 1},
            NormalizedCounts(total=10, succeeded=6, errored=1, pending=3),
        ),
        (  # Anthropic ended after a cancel: only the counters tell what happened
            "anthropic",
            {"total": 5, "completed": 2, "failed": 1, "succeeded": 2, "canceled": 2},
            NormalizedCounts(total=5, succeeded=2, errored=1, canceled=2),
        ),
        (
            "anthropic",
            {"total": 4, "completed": 1, "failed": 0, "succeeded": 1, "expired": 1, "pending": 2},
            NormalizedCounts(total=4, succeeded=1, errored=0, expired=1, pending=2),
        ),
        (  # Gemini: completed counts processed requests, succeeded is omitted when zero
            "gemini",
            {"total": 5, "completed": 5, "failed": 5},
            NormalizedCounts(total=5, succeeded=0, errored=5),
        ),
        (
            "gemini",
            {"total": 10, "completed": 7, "failed": 2, "succeeded": 5, "pending": 3},
            NormalizedCounts(total=10, succeeded=5, errored=2, pending=3),
        ),
    ],
)
def test_normalized_counts(provider: str, counts: dict, expected: NormalizedCounts) -> None:
    assert NormalizedCounts.of(BatchRequestCounts.model_validate(counts), provider) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("cancelled", NormalizedCounts(total=10, succeeded=4, errored=1, canceled=5)),
        ("canceled", NormalizedCounts(total=10, succeeded=4, errored=1, canceled=5)),
        ("expired", NormalizedCounts(total=10, succeeded=4, errored=1, expired=5)),
        ("in_progress", NormalizedCounts(total=10, succeeded=4, errored=1, pending=5)),
        ("completed", NormalizedCounts(total=10, succeeded=4, errored=1, pending=5)),
    ],
)
def test_undecided_requests_of_a_cancelled_or_expired_batch(
    status: str, expected: NormalizedCounts
) -> None:
    counts = BatchRequestCounts(total=10, completed=4, failed=1)
    assert NormalizedCounts.of(counts, "openai", status) == expected


def test_view_of_an_anthropic_batch() -> None:
    batch = BatchRetrieveResponse.model_validate(
        {
            "id": "msgbatch_1",
            "status": "ended",
            "request_counts": {"total": 2, "completed": 1, "failed": 1, "succeeded": 1},
            "created_at": 100,
            "expires_at": 200,
        }
    )
    view = BatchView.of(batch, "anthropic")
    assert (view.status, view.terminal, view.results_source) == ("ended", True, "results_endpoint")
    assert view.counts == NormalizedCounts(total=2, succeeded=1, errored=1)
    assert (view.created_at, view.expires_at) == (100, 200)


def test_view_of_an_openai_batch_with_files_and_errors() -> None:
    batch = BatchRetrieveResponse.model_validate(
        {
            "id": "batch_1",
            "status": "failed",
            "output_file_id": "file-o",
            "error_file_id": "file-e",
            "errors": {"data": [{"code": "bad_line", "message": "line 2", "line": 2}]},
        }
    )
    view = BatchView.of(batch, "openai")
    assert view.results_source == "files"
    assert (view.output_file_id, view.error_file_id) == ("file-o", "file-e")
    assert [e.line for e in view.errors] == [2]


def test_view_of_create_and_cancel_answers() -> None:
    created = BatchView.of(BatchCreateResponse(id="b", status="validating"), "openai")
    assert (created.status, created.terminal) == ("validating", False)
    cancelled = BatchView.of(BatchCancelResponse(id="b", status="canceled"), "openai")
    assert (cancelled.status, cancelled.raw_status, cancelled.terminal) == (
        "cancelled",
        "cancelled",
        True,
    )


def test_view_done_flag_makes_an_unknown_status_terminal() -> None:
    batch = BatchRetrieveResponse.model_validate({"id": "batches/1", "status": "x", "done": True})
    view = BatchView.of(batch, "gemini")
    assert (view.status, view.terminal) == ("x", True)


@pytest.mark.parametrize(
    ("provider", "output_file_id", "source"),
    [
        ("mistral", "file-1", "files"),
        ("mistral", None, "results_endpoint"),
        # Bedrock names its S3 output prefix as the output file: results come from /results
        ("bedrock", "s3://out/", "results_endpoint"),
    ],
)
def test_where_a_views_results_are(provider: str, output_file_id: str | None, source: str) -> None:
    batch = BatchRetrieveResponse(id="b", status="completed", output_file_id=output_file_id)
    assert BatchView.of(batch, provider).results_source == source


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(text.encode())
    return path


def test_inline_body_is_the_exact_json_it_announces(tmp_path: Path) -> None:
    lines = [{"custom_id": f"r{i}", "params": {"max_tokens": i, "x": "é"}} for i in range(3000)]
    text = "\ufeff" + "\n".join(json.dumps(line) for line in lines) + "\n\n  \n"
    body = InlineRequestsBody(
        {"model": "anthropic/m", "endpoint": "/v1/messages"}, _write(tmp_path, text)
    )
    data = b"".join(body)
    assert len(data) == body.content_length
    assert body.count == 3000
    parsed = json.loads(data)
    assert parsed["model"] == "anthropic/m"
    assert parsed["requests"] == lines


def test_inline_body_without_other_fields(tmp_path: Path) -> None:
    body = InlineRequestsBody({}, _write(tmp_path, '{"custom_id":"a"}\n'))
    assert b"".join(body) == b'{"requests":[{"custom_id":"a"}]}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"custom_id":"a"}\n{"custom_id": \n', "requests.jsonl:2: not valid JSON"),
        ('{"custom_id":"a"}\n\n[1, 2]\n', "requests.jsonl:3: not a JSON object"),
        ('{"params":{}}\n', "requests.jsonl:1: custom_id missing"),
        ('{"custom_id":""}\n', "requests.jsonl:1: custom_id missing"),
        ("\n  \n", "requests.jsonl: no requests in the file"),
    ],
)
def test_inline_body_reports_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RequestFileError) as info:
        InlineRequestsBody({}, _write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_inline_body_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RequestFileError, match="cannot read"):
        InlineRequestsBody({}, tmp_path / "absent.jsonl")


def test_timeouts_reach_httpx() -> None:
    from batch_pipeline.gateway import Timeouts

    assert Timeouts(connect=1, read=2, write=3, pool=4).as_httpx() == httpx.Timeout(
        connect=1, read=2, write=3, pool=4
    )
