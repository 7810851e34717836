"""The Starlette application: routes on the raw (still percent-encoded) path so ids containing
'/' arrive whole, then auth, injected faults, the handler and a late answer, in that order."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from batch_pipeline.emulator.admin_routes import AdminRoutes
from batch_pipeline.emulator.anthropic_batches import AnthropicBatches
from batch_pipeline.emulator.anthropic_routes import AnthropicRoutes
from batch_pipeline.emulator.azure_batches import AzureBatches
from batch_pipeline.emulator.azure_blob_routes import AzureBlobRoutes
from batch_pipeline.emulator.batches import ProviderBatches
from batch_pipeline.emulator.bedrock_batches import BedrockBatches
from batch_pipeline.emulator.bedrock_routes import BedrockRoutes
from batch_pipeline.emulator.errors import ApiError
from batch_pipeline.emulator.gemini_batches import GeminiBatches
from batch_pipeline.emulator.genai_routes import GenAIRoutes
from batch_pipeline.emulator.openai_batches import OpenAIBatches
from batch_pipeline.emulator.openai_routes import OpenAIRoutes
from batch_pipeline.emulator.responses import error_response
from batch_pipeline.emulator.runtime import Runtime
from batch_pipeline.emulator.service import BatchService
from batch_pipeline.emulator.v1_routes import INFERENCE_ROUTES, Call, V1Routes
from batch_pipeline.emulator.vertex_batches import VertexBatches

log = logging.getLogger(__name__)
Handler = Callable[[Call], Awaitable[Response]]
ErrorRenderer = Callable[[ApiError, str | None, str | None], Response]
RouteEntry = tuple[str, tuple[str, ...], str, Handler, ErrorRenderer]
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
KEY_HEADERS = ("x-bf-vk", "x-api-key", "x-goog-api-key", "api-key")


def make_providers() -> dict[str, ProviderBatches]:
    """The providers this emulator speaks for."""
    return {
        "openai": OpenAIBatches("openai"),
        "azure": AzureBatches(),
        "anthropic": AnthropicBatches(),
        "gemini": GeminiBatches(),
        "bedrock": BedrockBatches(),
        "vertex": VertexBatches(),
    }


def _matches(value: str, keys: tuple[SecretStr, ...]) -> bool:
    """Whether `value` is one of `keys`, compared in constant time."""
    return any(hmac.compare_digest(value.encode(), k.get_secret_value().encode()) for k in keys)


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    """The path parameters ('*' segments; a final '**' takes the rest, joined with '/') when
    `segments` fits `pattern`."""
    if pattern and pattern[-1] == "**":
        head = len(pattern) - 1
        if len(segments) <= head:
            return None
        params = _match(pattern[:-1], segments[:head])
        return None if params is None else [*params, "/".join(unquote(s) for s in segments[head:])]
    if len(pattern) != len(segments):
        return None
    params = []
    for expected, actual in zip(pattern, segments, strict=True):
        if expected == "*":
            params.append(unquote(actual))
        elif expected != actual:
            return None
    return params


class EmulatorApp:
    """Builds the Starlette app around a Runtime."""

    def __init__(self, rt: Runtime, providers: dict[str, ProviderBatches]) -> None:
        self.rt = rt
        service = BatchService(rt, providers)
        v1 = V1Routes(rt, service)
        self.v1_table: list[tuple[str, tuple[str, ...], str, Handler]] = [
            ("POST", ("v1", "batches"), "batch_create", v1.batch_create),
            ("GET", ("v1", "batches"), "batch_list", v1.batch_list),
            ("GET", ("v1", "batches", "*"), "batch_retrieve", v1.batch_retrieve),
            ("POST", ("v1", "batches", "*", "cancel"), "batch_cancel", v1.batch_cancel),
            ("GET", ("v1", "batches", "*", "results"), "batch_results", v1.batch_results),
            ("POST", ("v1", "files"), "file_upload", v1.file_upload),
            ("GET", ("v1", "files"), "file_list", v1.file_list),
            ("GET", ("v1", "files", "*"), "file_retrieve", v1.file_retrieve),
            ("DELETE", ("v1", "files", "*"), "file_delete", v1.file_delete),
            ("GET", ("v1", "files", "*", "content"), "file_content", v1.file_content),
        ]
        for request_type, (endpoint, _) in INFERENCE_ROUTES.items():
            pattern = tuple(endpoint.strip("/").split("/"))
            self.v1_table.append(("POST", pattern, request_type, v1.inference))
        self.table: list[RouteEntry] = [(*entry, error_response) for entry in self.v1_table]
        for integration in (
            OpenAIRoutes(rt, service),
            AnthropicRoutes(rt, service),
            GenAIRoutes(rt, service),
            BedrockRoutes(rt, service),
        ):
            self.table.extend(
                (method, pattern, kind, handler, integration.render_error)
                for method, pattern, kind, handler in integration.routes()
            )
        # Azure blob storage is not Bifrost: its requests carry a SAS token, not the gateway's keys
        blobs = AzureBlobRoutes(rt, service)
        self.storage_table: list[RouteEntry] = [
            (*entry, blobs.render_error) for entry in blobs.routes()
        ]
        self.admin = AdminRoutes(rt)

    def build(self) -> Starlette:
        """The ASGI application."""
        return Starlette(routes=[Route("/{path:path}", self.dispatch, methods=ALL_METHODS)])

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        segments = raw.decode("latin-1").split("?", 1)[0].strip("/").split("/")
        if segments[0] in ("_emulator", "health"):
            return await self.admin.dispatch(request, segments)
        storage = segments[0] == "azure-blob"
        path_known = False
        for method, pattern, request_type, handler, render in (
            self.storage_table if storage else self.table
        ):
            params = _match(pattern, segments)
            if params is None:
                continue
            path_known = True
            if method == request.method:
                call = Call(request, params, time.perf_counter(), request_type)
                return await self._answer(call, handler, render, authenticate=not storage)
        if path_known:
            return error_response(ApiError(405, "method not allowed"), None, None)
        return error_response(ApiError(404, f"route not found: {request.url.path}"), None, None)

    async def _answer(
        self,
        call: Call,
        handler: Handler,
        render: ErrorRenderer = error_response,
        *,
        authenticate: bool = True,
    ) -> Response:
        self.rt.counters.request(call.request_type)
        try:
            if authenticate:
                self._check_auth(call.request)
            await self._inject_faults(call)
            response = await handler(call)
            await self._hold_answer(call.request_type)
            return response
        except ApiError as exc:
            return render(exc, call.request_type, call.provider)
        except ClientDisconnect:
            # The client left before its request arrived whole: nothing was done, nobody listens.
            return error_response(ApiError(499, "client closed request"), call.request_type, None)
        except Exception as exc:
            log.exception("emulator route %s failed", call.request_type)
            failure = ApiError(None, f"internal emulator error: {type(exc).__name__}", bifrost=True)
            return render(failure, call.request_type, call.provider)

    def _check_auth(self, request: Request) -> None:
        config = self.rt.config
        if config.virtual_keys:
            virtual = request.headers.get("x-bf-vk")
            if not virtual:
                raise ApiError(
                    401, "virtual key is required: send it as x-bf-vk", type="authentication_error"
                )
            if not _matches(virtual, config.virtual_keys):
                raise ApiError(401, "invalid virtual key", type="authentication_error")
        if not config.api_keys:
            return
        # with virtual keys required too, the API key must come in a header of its own
        headers = KEY_HEADERS[1:] if config.virtual_keys else KEY_HEADERS
        presented = [request.headers.get(name) for name in headers]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            presented.append(token.strip())
        offered = [value for value in presented if value]
        if not offered:
            raise ApiError(
                401,
                "virtual key is required: send it as x-bf-vk or Authorization: Bearer",
                type="authentication_error",
            )
        if not any(_matches(value, config.api_keys) for value in offered):
            raise ApiError(401, "invalid virtual key", type="authentication_error")

    async def _hold_answer(self, request_type: str) -> None:
        """slow_answer: the request was handled; its answer is late (the client may give up)."""
        late = self.rt.faults.take("slow_answer", request_type)
        if late is not None:
            self.rt.counters.fault_fired("slow_answer")
            await asyncio.sleep(late.delay)

    async def _inject_faults(self, call: Call) -> None:
        faults, counters = self.rt.faults, self.rt.counters
        request, request_type = call.request, call.request_type
        slow = faults.take("slow", request_type)
        if slow is not None:
            counters.fault_fired("slow")
            # Received in full before the wait, so the request is handled after it even when the
            # client has given up meanwhile, as by a gateway that already passed it upstream.
            declared = int(request.headers.get("content-length") or 0)
            if 0 < declared <= self.rt.config.max_body_bytes:
                await request.body()
            await asyncio.sleep(faults.delay_of(slow))
        limited = faults.take("rate_limit", request_type)
        if limited is not None:
            counters.fault_fired("rate_limit")
            wait = limited.retry_after
            raise ApiError(
                429,
                f"Rate limit exceeded. Please retry after {wait:g} seconds.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={
                    "Retry-After": f"{wait:g}",
                    "retry-after-ms": str(int(wait * 1000)),
                },
            )
        gone = faults.take("not_found", request_type)
        if gone is not None:
            counters.fault_fired("not_found")
            raise ApiError(404, f"Injected: the object is gone ({request_type}).", type="not_found")
        failing = faults.take("server_error", request_type)
        if failing is not None:
            counters.fault_fired("server_error")
            raise ApiError(
                failing.status,
                f"Injected upstream failure (HTTP {failing.status}).",
                type="server_error",
            )
