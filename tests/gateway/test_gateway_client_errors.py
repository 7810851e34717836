"""Error paths of BifrostClient, driven by an httpx MockTransport (the happy paths run against
the emulator over real HTTP in test_gateway_client_http.py)."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from batch_pipeline.gateway import (
    AuthenticationError,
    BadRequestError,
    BifrostClient,
    GatewayConfigError,
    GatewayConnectionError,
    GatewayError,
    GatewayProtocolError,
    GatewayStatusError,
    GatewayTimeoutError,
    GatewayTLSError,
    NotFoundError,
    RateLimitError,
    ServerError,
)

KEY = "sk-bf-REDACT-ME-7f3a9c"
VKEY = "sk-bf-VIRTUAL-KEY-0b1d"
BATCH = {"id": "batch_1", "object": "batch", "status": "in_progress"}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that answers from a script and records every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):  # a fresh copy: a response is read only once
            return httpx.Response(answer.status_code, headers=answer.headers, stream=answer.stream)
        return answer(request)


class FakeTime:
    """Sleep advances a fake clock, so retry budgets are checked without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make_client(recorder: Recorder, **kwargs: object) -> tuple[BifrostClient, FakeTime]:
    options: dict = {"api_key": KEY, "virtual_key": VKEY, **kwargs}
    client = BifrostClient(
        "http://127.0.0.1:8080", transport=httpx.MockTransport(recorder), **options
    )
    fake = FakeTime()
    client._session.sleep = fake.sleep
    client._session.clock = fake.clock
    return client, fake


def bifrost_error(status: int, message: str, **extra: object) -> httpx.Response:
    body = {
        "is_bifrost_error": False,
        "status_code": status,
        "error": {"type": "invalid_request_error", "message": message},
        "extra_fields": {"provider": "openai", "request_type": "batch_retrieve", **extra},
    }
    return httpx.Response(status, json=body)


# --------------------------------------------------------------------------------- retries


def test_429_waits_retry_after_then_succeeds() -> None:
    recorder = Recorder(
        httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "slow"}}),
        httpx.Response(200, json=BATCH),
    )
    client, fake = make_client(recorder)
    assert client.retrieve_batch("batch_1", provider="openai").id == "batch_1"
    assert fake.sleeps == [3.0]
    assert len(recorder.requests) == 2


def test_retry_after_as_http_date_is_honoured() -> None:
    recorder = Recorder(
        httpx.Response(503, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}),
        httpx.Response(200, json=BATCH),
    )
    client, fake = make_client(recorder)
    client.retrieve_batch("batch_1", provider="openai")
    assert fake.sleeps == [0.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_growing_jittered_backoff(status: int) -> None:
    recorder = Recorder(*[httpx.Response(status)] * 4, httpx.Response(200, json=BATCH))
    client, fake = make_client(recorder)
    client.retrieve_batch("batch_1", provider="openai")
    assert len(recorder.requests) == 5
    ceilings = [0.5, 1.0, 2.0, 4.0]
    assert all(0 <= d <= c for d, c in zip(fake.sleeps, ceilings, strict=True))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 501])
def test_other_statuses_are_not_retried(status: int) -> None:
    recorder = Recorder(httpx.Response(status), httpx.Response(200, json=BATCH))
    client, fake = make_client(recorder)
    with pytest.raises(GatewayStatusError):
        client.retrieve_batch("batch_1", provider="openai")
    assert len(recorder.requests) == 1
    assert fake.sleeps == []


def test_connection_errors_are_retried_for_reads() -> None:
    recorder = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json=BATCH))
    client, _ = make_client(recorder)
    assert client.retrieve_batch("batch_1", provider="openai").id == "batch_1"
    assert len(recorder.requests) == 2


def test_total_retry_time_is_bounded() -> None:
    recorder = Recorder(httpx.Response(503, json={"error": {"message": "down"}}))
    client, fake = make_client(recorder, max_retry_seconds=20.0)
    with pytest.raises(ServerError) as info:
        client.list_batches(provider="openai").__next__()
    assert sum(fake.sleeps) <= 20.0
    assert len(recorder.requests) > 3
    assert info.value.attempts == len(recorder.requests)
    assert f"gave up after {len(recorder.requests)} attempts" in str(info.value)


def test_retry_after_beyond_the_budget_raises_at_once() -> None:
    recorder = Recorder(
        httpx.Response(429, headers={"Retry-After": "120"}), httpx.Response(200, json=BATCH)
    )
    client, fake = make_client(recorder, max_retry_seconds=60.0)
    with pytest.raises(RateLimitError) as info:
        client.retrieve_batch("batch_1", provider="openai")
    assert info.value.retry_after == 120.0
    assert fake.sleeps == []


def test_zero_budget_means_no_retry() -> None:
    recorder = Recorder(httpx.Response(503), httpx.Response(200, json=BATCH))
    client, _ = make_client(recorder, max_retry_seconds=0.0)
    with pytest.raises(ServerError):
        client.retrieve_batch("batch_1", provider="openai")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(429, headers={"Retry-After": "1"}),
        httpx.Response(500),
        httpx.Response(503),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
)
def test_create_is_never_retried(answer: httpx.Response | Exception) -> None:
    recorder = Recorder(answer, httpx.Response(200, json=BATCH))
    client, fake = make_client(recorder)
    with pytest.raises(GatewayError) as info:
        client.create_batch(
            model="openai/gpt-4o-mini", endpoint="/v1/chat/completions", input_file_id="file-1"
        )
    assert len(recorder.requests) == 1
    assert fake.sleeps == []
    if isinstance(answer, Exception):
        assert info.value.request_sent is True
        assert "outcome unknown" in str(info.value)


def test_create_not_sent_when_the_connection_fails() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    client, _ = make_client(recorder)
    with pytest.raises(GatewayConnectionError) as info:
        client.create_batch(model="openai/m", endpoint="/v1/embeddings", input_file_id="f")
    assert info.value.request_sent is False
    assert "not sent" in str(info.value)


def test_upload_is_retried_with_the_whole_file(tmp_path: Path) -> None:
    shard = tmp_path / "shard.jsonl"
    shard.write_text('{"custom_id":"a"}\n')
    recorder = Recorder(
        httpx.Response(503),
        httpx.Response(429, headers={"retry-after": "0"}),
        httpx.Response(200, json={"id": "file-1", "object": "file", "bytes": 18}),
    )
    client, _ = make_client(recorder)
    assert client.upload_file(shard, provider="openai").id == "file-1"
    assert len(recorder.requests) == 3
    bodies = [request.read() for request in recorder.requests]
    assert all(b'{"custom_id":"a"}\n' in body for body in bodies)


# -------------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize(
    ("exc", "sent", "kind"),
    [
        (httpx.ConnectTimeout("connect"), False, "connect timeout"),
        (httpx.PoolTimeout("pool"), False, "pool timeout"),
        (httpx.ReadTimeout("read"), True, "read timeout"),
        (httpx.WriteTimeout("write"), True, "write timeout"),
    ],
)
def test_timeouts_become_gateway_timeout_errors(exc: Exception, sent: bool, kind: str) -> None:
    client, _ = make_client(Recorder(exc), max_retry_seconds=5.0)
    with pytest.raises(GatewayTimeoutError) as info:
        client.retrieve_file("file-1", provider="openai")
    assert info.value.request_sent is sent
    assert str(info.value).startswith(f"GET /v1/files/file-1: {kind}")
    assert info.value.attempts > 1


def test_untrusted_certificate_is_not_retried_and_says_what_to_do() -> None:
    try:
        raise ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate")
    except ssl.SSLError as cause:
        failure = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]")
        failure.__cause__ = cause
    recorder = Recorder(failure, httpx.Response(200, json=BATCH))
    client = BifrostClient("https://gw.example.com", transport=httpx.MockTransport(recorder))
    with pytest.raises(GatewayTLSError, match="verify=<CA bundle path>") as info:
        client.retrieve_batch("b", provider="openai")
    assert "gw.example.com" in str(info.value)
    assert len(recorder.requests) == 1


# ----------------------------------------------------------------------------- error bodies


@pytest.mark.parametrize(
    ("response", "cls", "message"),
    [
        (
            bifrost_error(404, "No such batch: batch_x"),
            NotFoundError,
            "GET /v1/batches/batch_x: HTTP 404 invalid_request_error: No such batch: batch_x "
            "(provider=openai, request_type=batch_retrieve); "
            "check the id and the provider it was created with",
        ),
        (
            httpx.Response(
                400, json={"is_bifrost_error": False, "error": {"message": "bad", "code": 17}}
            ),
            BadRequestError,
            "GET /v1/batches/batch_x: HTTP 400 (code 17): bad (provider=openai, request_type=batch_retrieve); "
            "fix the request; retrying it unchanged will fail again",
        ),
        (
            httpx.Response(401, json={"error": "invalid virtual key"}),
            AuthenticationError,
            "GET /v1/batches/batch_x: HTTP 401: invalid virtual key (provider=openai, "
            "request_type=batch_retrieve); check BIFROST_API_KEY / the virtual key and its permissions",
        ),
        (
            httpx.Response(403, json={"message": "forbidden by policy"}),
            AuthenticationError,
            "HTTP 403: forbidden by policy",
        ),
        (
            httpx.Response(409, text="conflict\n  happened"),
            GatewayStatusError,
            "GET /v1/batches/batch_x: HTTP 409: conflict happened (provider=openai, request_type=batch_retrieve)",
        ),
        (httpx.Response(404), NotFoundError, "HTTP 404: Not Found"),
    ],
)
def test_error_bodies_become_one_actionable_line(
    response: httpx.Response, cls: type, message: str
) -> None:
    client, _ = make_client(Recorder(response))
    with pytest.raises(cls) as info:
        client.retrieve_batch("batch_x", provider="openai")
    assert type(info.value) is cls
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.status_code == response.status_code
    assert info.value.error.status_code == response.status_code


def test_html_error_page_is_truncated_to_one_line() -> None:
    page = "<html>\n<body>\n" + "Bad gateway " * 200 + "\n</body></html>"
    client, _ = make_client(Recorder(httpx.Response(502, text=page)), max_retry_seconds=0)
    with pytest.raises(ServerError) as info:
        client.batch_results("b", provider="anthropic")
    text = str(info.value)
    assert "\n" not in text
    assert "<html> <body> Bad gateway" in text
    assert len(info.value.message) <= 300


def test_error_carries_parsed_bifrost_error_and_provider_from_the_gateway() -> None:
    response = bifrost_error(404, "gone", request_type="batch_cancel", error_type="caller_x")
    client, _ = make_client(Recorder(response))
    with pytest.raises(NotFoundError) as info:
        client.cancel_batch("b", provider="openai")
    error = info.value
    assert error.provider == "openai"
    assert error.request_type == "batch_cancel"
    assert error.error.error is not None and error.error.error.type == "invalid_request_error"
    assert error.error.extra_fields is not None
    assert error.error.extra_fields.error_type == "caller_x"


def test_request_type_falls_back_to_the_call_made() -> None:
    client, _ = make_client(Recorder(httpx.Response(404, json={"error": {"message": "no"}})))
    with pytest.raises(NotFoundError) as info:
        client.delete_file("file-9", provider="azure")
    assert (info.value.provider, info.value.request_type) == ("azure", "file_delete")


@pytest.mark.parametrize(
    "body", [b"not json", b"[1,2]", b'{"object":"batch"}', b'{"id": 5, "status": "x"}']
)
def test_unparseable_success_body_is_a_protocol_error(body: bytes) -> None:
    client, _ = make_client(Recorder(httpx.Response(200, content=body)))
    with pytest.raises(GatewayProtocolError) as info:
        client.retrieve_batch("b", provider="openai")
    assert str(info.value).startswith("GET /v1/batches/b: HTTP 200 with an unexpected body")
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- redaction


def test_keys_never_reach_errors_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    echo = {"error": {"message": f"key {KEY} / {VKEY} is not allowed"}}
    recorder = Recorder(
        httpx.Response(401, json=echo),
        httpx.Response(503, text=f"upstream rejected Bearer {KEY}"),
        httpx.ReadTimeout(f"timed out {KEY}"),
        httpx.ConnectError(f"refused for {VKEY}"),
    )
    client, _ = make_client(recorder, max_retry_seconds=0)
    texts: list[str] = [repr(client), str(client.__dict__.get("_api_key"))]
    with caplog.at_level(logging.DEBUG):
        for call in range(4):
            with pytest.raises(GatewayError) as info:
                client.retrieve_batch(f"b{call}", provider="openai")
            error = info.value
            texts += [str(error), repr(error), repr(error.args)]
            if isinstance(error, GatewayStatusError):
                texts.append(error.error.model_dump_json())
    texts += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    assert len(caplog.records) >= 4
    # the last request really carried both keys, so the test can fail
    assert recorder.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert recorder.requests[-1].headers["x-bf-vk"] == VKEY
    leaked = [t for t in texts if KEY in t or VKEY in t]
    assert leaked == []


def test_config_errors_do_not_echo_the_key() -> None:
    with pytest.raises(GatewayConfigError) as info:
        BifrostClient("http://127.0.0.1:1", api_key=KEY + "\n")
    assert KEY not in str(info.value)


def test_no_auth_headers_without_keys() -> None:
    recorder = Recorder(httpx.Response(200, json=BATCH))
    client, _ = make_client(recorder, api_key=None, virtual_key=None)
    client.retrieve_batch("b", provider="openai")
    headers = recorder.requests[0].headers
    assert "authorization" not in headers and "x-bf-vk" not in headers


# -------------------------------------------------------------------- provider and encoding


@pytest.mark.parametrize(
    ("batch_id", "raw_path"),
    [
        ("batches/abc", b"/v1/batches/batches%2Fabc"),
        (
            "arn:aws:bedrock:us-east-1:123:model-invocation-job/x1",
            b"/v1/batches/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Amodel-invocation-job%2Fx1",
        ),
        ("batch_plain", b"/v1/batches/batch_plain"),
        ("a b?c#d", b"/v1/batches/a%20b%3Fc%23d"),
    ],
)
def test_ids_are_percent_encoded_in_paths(batch_id: str, raw_path: bytes) -> None:
    recorder = Recorder(httpx.Response(200, json={**BATCH, "id": batch_id}))
    client, _ = make_client(recorder)
    assert client.retrieve_batch(batch_id, provider="gemini").id == batch_id
    request = recorder.requests[0]
    assert request.url.raw_path.split(b"?")[0] == raw_path
    assert request.url.params["provider"] == "gemini"
    assert request.headers["x-model-provider"] == "gemini"


def test_create_takes_the_provider_from_the_model() -> None:
    recorder = Recorder(httpx.Response(200, json={"id": "msgbatch_1", "status": "in_progress"}))
    client, _ = make_client(recorder)
    client.create_batch(
        model="anthropic/claude-3-5-haiku-latest",
        endpoint="/v1/messages",
        requests=[{"custom_id": "q1", "params": {"max_tokens": 8, "stop": None}}],
    )
    request = recorder.requests[0]
    assert request.url.params["provider"] == "anthropic"
    assert request.headers["x-model-provider"] == "anthropic"
    body = json.loads(request.content)
    assert body["requests"] == [{"custom_id": "q1", "params": {"max_tokens": 8, "stop": None}}]
    assert body["completion_window"] == "24h"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "openai/m", "input_file_id": "f", "requests": []}, "exactly one"),
        ({"model": "openai/m"}, "exactly one"),
        ({"model": "gpt-4o", "input_file_id": "f"}, "provider/model"),
        ({"model": None, "input_file_id": "f"}, "provider/model"),
        ({"model": "openai/m", "input_file_id": "f", "provider": "azure"}, "does not match"),
    ],
)
def test_create_argument_mistakes(kwargs: dict, message: str) -> None:
    recorder = Recorder(httpx.Response(200, json=BATCH))
    client, _ = make_client(recorder)
    with pytest.raises(ValueError, match=message):
        client.create_batch(endpoint="/v1/chat/completions", **kwargs)
    assert recorder.requests == []


# ------------------------------------------------------------------------------ pagination


def pages(*answers: dict) -> Recorder:
    return Recorder(*[httpx.Response(200, json=a) for a in answers])


def test_file_list_follows_the_after_cursor() -> None:
    recorder = pages(
        {"data": [{"id": "f1"}, {"id": "f2"}], "has_more": True, "after": "c1"},
        {"data": [], "has_more": True, "after": "c2"},
        {"data": [{"id": "f3"}], "has_more": False},
    )
    client, _ = make_client(recorder)
    ids = [f.id for f in client.list_files(provider="openai", purpose="batch", limit=2)]
    assert ids == ["f1", "f2", "f3"]
    afters = [r.url.params.get("after") for r in recorder.requests]
    assert afters == [None, "c1", "c2"]
    assert all(r.url.params["limit"] == "2" for r in recorder.requests)
    assert all(r.url.params["purpose"] == "batch" for r in recorder.requests)


def test_batch_list_stops_when_the_gateway_ignores_the_cursor() -> None:
    page = {"data": [{"id": "b1"}, {"id": "b2"}], "has_more": True, "next_cursor": "c1"}
    same_page_new_cursor = {**page, "next_cursor": "c2"}
    recorder = pages(page, same_page_new_cursor, {"data": [{"id": "b9"}]})
    client, _ = make_client(recorder)
    assert [b.id for b in client.list_batches(provider="anthropic")] == ["b1", "b2"]
    assert len(recorder.requests) == 2


def test_batch_list_stops_when_a_cursor_repeats() -> None:
    recorder = pages(
        {"data": [{"id": "b1"}], "has_more": True, "next_cursor": "c1"},
        {"data": [{"id": "b2"}], "has_more": True, "next_cursor": "c1"},
        {"data": [{"id": "b3"}]},
    )
    client, _ = make_client(recorder)
    assert [b.id for b in client.list_batches(provider="openai")] == ["b1", "b2"]
    assert len(recorder.requests) == 2


def test_batch_list_yields_each_id_once_across_overlapping_pages() -> None:
    recorder = pages(
        {"data": [{"id": "b1"}, {"id": "b2"}], "has_more": True, "next_cursor": "c1"},
        {"data": [{"id": "b2"}, {"id": "b3"}], "has_more": False, "next_cursor": "c2"},
    )
    client, _ = make_client(recorder)
    assert [b.id for b in client.list_batches(provider="openai", limit=2)] == ["b1", "b2", "b3"]


def test_batch_list_stops_without_has_more() -> None:
    recorder = pages({"data": [{"id": "b1"}], "next_cursor": "c1"}, {"data": [{"id": "b2"}]})
    client, _ = make_client(recorder)
    assert [b.id for b in client.list_batches(provider="openai")] == ["b1"]


# ------------------------------------------------------------------------------- downloads


class BrokenStream(httpx.SyncByteStream):
    """A body that delivers some bytes and then loses the connection."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset by peer")


def test_download_restarts_from_scratch_after_a_reset(tmp_path: Path) -> None:
    content = b"".join(f'{{"custom_id":"r{i}"}}\n'.encode() for i in range(1000))
    recorder = Recorder(
        httpx.Response(200, stream=BrokenStream([content[:100]])),
        httpx.Response(200, stream=BrokenStream([content[:5000], content[5000:9000]])),
        httpx.Response(200, content=content),
    )
    client, _ = make_client(recorder)
    dest = tmp_path / "out" / "output.jsonl"
    size = client.download_file_content("file-o", provider="openai", dest=dest)
    assert size == len(content)
    assert dest.read_bytes() == content
    assert sorted(p.name for p in dest.parent.iterdir()) == ["output.jsonl"]
    assert len(recorder.requests) == 3


def test_failed_download_leaves_no_file(tmp_path: Path) -> None:
    recorder = Recorder(httpx.Response(200, stream=BrokenStream([b"partial"])))
    client, _ = make_client(recorder, max_retry_seconds=3.0)
    dest = tmp_path / "output.jsonl"
    with pytest.raises(GatewayConnectionError, match="ReadError"):
        client.download_file_content("file-o", provider="openai", dest=dest)
    assert list(tmp_path.iterdir()) == []


def test_download_error_status_leaves_existing_file_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "output.jsonl"
    dest.write_bytes(b"previous")
    client, _ = make_client(Recorder(httpx.Response(404, json={"error": {"message": "no file"}})))
    with pytest.raises(NotFoundError):
        client.download_file_content("file-o", provider="openai", dest=dest)
    assert dest.read_bytes() == b"previous"


# ----------------------------------------------------------------------- concurrent retrieve


def test_retrieve_batches_maps_each_id_to_its_batch_or_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        batch_id = request.url.path.rsplit("/", 1)[-1]
        if batch_id.startswith("gone"):
            return httpx.Response(404, json={"error": {"message": f"no {batch_id}"}})
        provider = request.url.params["provider"]
        return httpx.Response(200, json={"id": batch_id, "status": "completed", "p": provider})

    client, _ = make_client(Recorder(answer))
    refs = [(f"b{i}", "openai") for i in range(50)] + [("gone1", "anthropic"), ("b3", "openai")]
    found = client.retrieve_batches(refs, max_workers=8)
    assert set(found) == {f"b{i}" for i in range(50)} | {"gone1"}
    assert isinstance(found["gone1"], NotFoundError)
    assert found["gone1"].provider == "anthropic"
    assert found["b7"].id == "b7"
    assert client.retrieve_batches([]) == {}


def test_retrieve_batches_stops_the_sweep_when_the_gateway_is_unreachable() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    client, fake = make_client(recorder, max_retry_seconds=3.0)
    refs = [(f"b{i}", "openai") for i in range(20)]
    found = client.retrieve_batches(refs, max_workers=1)
    assert set(found) == {f"b{i}" for i in range(20)}
    first = found["b0"]
    assert isinstance(first, GatewayConnectionError) and first.attempts > 1
    sent = {request.url.path for request in recorder.requests}
    assert sent == {"/v1/batches/b0"}  # only the first was tried (and retried); none after it
    for batch_id in (f"b{i}" for i in range(1, 20)):
        skipped = found[batch_id]
        assert isinstance(skipped, GatewayConnectionError) and skipped.request_sent is False
        assert "did not answer this sweep" in str(skipped)
    assert sum(fake.sleeps) <= 3.0
