"""Admin routes under `/_emulator/` (never authenticated, never faulted): health, counters,
faults, runtime settings, forced expiry, internal batch state and reset."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from batch_pipeline.emulator import objects
from batch_pipeline.emulator.batches import TERMINAL_STATUSES
from batch_pipeline.emulator.config import Fault
from batch_pipeline.emulator.responses import json_response
from batch_pipeline.emulator.runtime import Runtime

ROUTES_HELP: dict[str, str] = {
    "GET /health, GET /_emulator/health": "liveness",
    "GET /_emulator/counters": "batches created (total, per provider, per metadata key/value, "
    "per inline-requests fingerprint), files uploaded, requests per route, faults fired",
    "GET /_emulator/faults": "armed faults and their remaining shots",
    "POST /_emulator/faults": "arm a fault (a Fault object or a list of them)",
    "DELETE /_emulator/faults": "disarm every fault",
    "GET /_emulator/config": "current settings (keys redacted)",
    "PATCH /_emulator/config": "change timing / error-rate knobs at runtime",
    "GET /_emulator/batches/{id}": "a batch's internal record (progress, offsets)",
    "POST /_emulator/batches/{id}/expire": "expire a running batch now",
    "POST /_emulator/reset": 'zero counters and disarm faults; {"state": true} also forgets '
    "every file and batch",
    "PUT /_emulator/objects?uri=URI": "store an object in the simulated S3 / GCS / Azure blob "
    "storage (s3://, gs://, https://ACCOUNT.blob.core.windows.net/...)",
    "GET /_emulator/objects?uri=URI": "an object's bytes",
    "GET /_emulator/objects?prefix=URI": "the URIs of the objects under a prefix",
}


def _problem(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    return orjson.loads(raw)


class AdminRoutes:
    """Test and operator controls of a running emulator."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def dispatch(self, request: Request, segments: list[str]) -> Response:
        """Route an admin request; `segments` is the split path."""
        method = request.method
        tail = segments[1:] if segments[0] == "_emulator" else ["health"]
        try:
            if tail in (["health"], [""]) and method == "GET":
                return json_response({"status": "ok", "routes": ROUTES_HELP})
            if tail == ["counters"] and method == "GET":
                return json_response(self.rt.counters.snapshot())
            if tail == ["faults"]:
                return await self._faults(request)
            if tail == ["config"]:
                return await self._config(request)
            if tail == ["reset"] and method == "POST":
                return await self._reset(request)
            if tail == ["objects"]:
                return await self._objects(request)
            if len(tail) >= 2 and tail[0] == "batches":
                return self._batch(request, tail[1:])
        except orjson.JSONDecodeError:
            return _problem(400, "body is not valid JSON")
        except (ValidationError, ValueError) as exc:
            return _problem(400, str(exc).splitlines()[0] if str(exc) else "invalid value")
        return _problem(404, f"no admin route {method} {request.url.path}")

    async def _faults(self, request: Request) -> Response:
        board = self.rt.faults
        if request.method == "POST":
            data = await _json(request)
            items = data if isinstance(data, list) else [data]
            faults = [Fault.model_validate(item) for item in items]
            for fault in faults:
                board.arm(fault)
        elif request.method == "DELETE":
            board.clear()
        return json_response({"faults": board.describe()})

    async def _config(self, request: Request) -> Response:
        if request.method == "PATCH":
            data = await _json(request)
            if not isinstance(data, dict):
                return _problem(400, "expected a JSON object of settings")
            self.rt.update_settings(data)
        config = self.rt.config.model_dump(
            mode="json", exclude={"api_keys", "virtual_keys", "faults"}
        )
        config["auth_required"] = bool(self.rt.config.api_keys or self.rt.config.virtual_keys)
        return json_response(config)

    async def _reset(self, request: Request) -> Response:
        data = await _json(request) or {}
        self.rt.counters.reset()
        self.rt.faults.clear()
        if data.get("state"):
            self.rt.store.clear()
        return json_response({"reset": True, "state_cleared": bool(data.get("state"))})

    async def _objects(self, request: Request) -> Response:
        """The simulated object stores, for tests and operators: put, get, list."""
        store, query = self.rt.store, request.query_params
        if "prefix" in query and request.method == "GET":
            listed = [record.id for record in objects.list_objects(store, query["prefix"])]
            return json_response({"objects": listed})
        uri = query.get("uri", "")
        objects.split_uri(uri)
        if request.method == "PUT":
            record = objects.put_object(
                store, uri, await request.body(), content_type=request.headers.get("content-type")
            )
            return json_response({"uri": record.id, "bytes": record.bytes})
        found = objects.get_object(store, uri)
        if request.method != "GET" or found is None:
            return _problem(404, f"no object {uri}")
        return Response(store.file_data(found.id).read_bytes(), media_type=found.content_type)

    def _batch(self, request: Request, rest: list[str]) -> Response:
        store = self.rt.store
        with store.lock:
            batch = store.batches.get(unquote(rest[0]))
            if batch is None:
                return _problem(404, f"no batch {unquote(rest[0])}")
            if rest[1:] == ["expire"] and request.method == "POST":
                if batch.status in TERMINAL_STATUSES:
                    return _problem(409, f"batch {batch.id} is already {batch.status}")
                batch.expire_requested = True
                store.save_batch(batch)
                self.rt.wake.set()
            elif rest[1:] or request.method != "GET":
                return _problem(404, f"no admin route {request.method} {request.url.path}")
            return json_response(batch.model_dump())
