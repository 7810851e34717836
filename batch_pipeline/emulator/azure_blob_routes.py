"""Azure Blob Storage's Put, Get and Delete Blob, Azurite-style (`/azure-blob/{account}/{container}/
{path}`), over the simulated store the `/v1` Azure blob batches read
(`https://{account}.blob.core.windows.net/{container}/{path}`). Not a Bifrost route: requests
carry a SAS token (`sig` in the query), never the gateway's keys; errors are Azure's XML."""

from __future__ import annotations

import base64
import hashlib
import uuid
from email.utils import formatdate
from xml.sax.saxutils import escape

from starlette.responses import Response

from batch_pipeline.emulator import objects
from batch_pipeline.emulator.errors import ApiError
from batch_pipeline.emulator.integration import IntegrationRoutes, Route
from batch_pipeline.emulator.responses import FileDownload
from batch_pipeline.emulator.v1_routes import Call
from batch_pipeline.providers import azure_blob_url_problem

BLOB = ("azure-blob", "*", "*", "**")
API_VERSION = "2023-11-03"
# Azure's x-ms-error-code for the statuses faults inject
FAULT_CODES = {429: "ServerBusy", 500: "InternalError", 503: "ServerBusy"}


def _azure_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, message, code=code)


class AzureBlobRoutes(IntegrationRoutes):
    """Put Blob (block blobs only), Get Blob and Delete Blob, as the pipeline's blob client
    calls them."""

    def routes(self) -> list[Route]:
        return [
            ("PUT", BLOB, "blob_put", self.put_blob),
            ("GET", BLOB, "blob_get", self.get_blob),
            ("DELETE", BLOB, "blob_delete", self.delete_blob),
        ]

    def render_error(
        self, exc: ApiError, request_type: str | None, provider: str | None
    ) -> Response:
        """Azure's `<Error><Code/><Message/></Error>` with `x-ms-error-code`."""
        status = exc.http_status
        own = exc.code if exc.type is None else None  # injected faults carry Bifrost's types
        code = own or FAULT_CODES.get(status, "InternalError" if status >= 500 else "InvalidInput")
        message = f"{exc.message}\nRequestId:{uuid.uuid4()}\nTime:{formatdate(usegmt=True)}"
        xml = (
            '<?xml version="1.0" encoding="utf-8"?><Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        )
        headers = {**exc.headers, "x-ms-error-code": code, "x-ms-version": API_VERSION}
        return Response(xml, status, headers=headers, media_type="application/xml")

    def _uri(self, call: Call) -> str:
        """The blob's URL in the simulated store, once the request is authorized."""
        if "sig" not in call.request.query_params:
            raise _azure_error(
                401,
                "NoAuthenticationInformation",
                "Server failed to authenticate the request. Please refer to the information in "
                "the www-authenticate header.",
            )
        account, container, path = call.params
        uri = f"https://{account}.blob.core.windows.net/{container}/{path}"
        if not path or azure_blob_url_problem(uri):
            raise _azure_error(
                400,
                "InvalidResourceName",
                "The specifed resource name contains invalid characters.",
            )
        return uri

    async def put_blob(self, call: Call) -> Response:
        """Put Blob: the body streamed to disk, then stored under the blob's URL (replacing any
        older blob there)."""
        uri, headers = self._uri(call), call.request.headers
        kind = headers.get("x-ms-blob-type")
        if kind is None:
            raise _azure_error(
                400,
                "MissingRequiredHeader",
                "An HTTP header that's mandatory for this request is not specified.",
            )
        if kind != "BlockBlob":
            raise _azure_error(
                400, "InvalidHeaderValue", "The value for one of the HTTP headers is not valid."
            )
        store = self.rt.store
        part = store.files_dir / f".blob-{uuid.uuid4().hex}.part"
        digest = hashlib.md5(usedforsecurity=False)  # Azure's Content-MD5
        try:
            with part.open("wb") as out:
                async for chunk in call.request.stream():
                    digest.update(chunk)
                    out.write(chunk)
            md5 = base64.b64encode(digest.digest()).decode()
            sent = headers.get("content-md5")
            if sent is not None and sent != md5:
                raise _azure_error(
                    400,
                    "Md5Mismatch",
                    "The MD5 value specified in the request did not match with the MD5 value "
                    "calculated by the server.",
                )
            record = objects.put_object(
                store, uri, part, purpose="batch", content_type=headers.get("content-type")
            )
        finally:
            part.unlink(missing_ok=True)
        return Response(
            b"",
            201,
            headers={
                "ETag": f'"0x{int(record.created_ts * 1e6):X}"',
                "Last-Modified": formatdate(record.created_ts, usegmt=True),
                "Content-MD5": md5,
                "x-ms-request-server-encrypted": "true",
                "x-ms-version": API_VERSION,
            },
        )

    async def get_blob(self, call: Call) -> Response:
        """Get Blob: the whole blob, streamed from disk (`reset_download` faults apply)."""
        uri = self._uri(call)
        found = objects.get_object(self.rt.store, uri)
        if found is None:
            raise _azure_error(404, "BlobNotFound", "The specified blob does not exist.")
        cut = self.rt.faults.take("reset_download", call.request_type)
        if cut is not None:
            self.rt.counters.fault_fired("reset_download")
        download = FileDownload(
            self.rt.store.file_data(found.id),
            cut.after_bytes if cut is not None else None,
            content_type=found.content_type,
        )
        download.raw_headers += [
            (b"etag", f'"0x{int(found.created_ts * 1e6):X}"'.encode()),
            (b"last-modified", formatdate(found.created_ts, usegmt=True).encode()),
            (b"x-ms-blob-type", b"BlockBlob"),
            (b"x-ms-version", API_VERSION.encode()),
        ]
        return download

    async def delete_blob(self, call: Call) -> Response:
        """Delete Blob: 202 once the blob is gone; 404 BlobNotFound when there is none."""
        uri = self._uri(call)
        found = objects.get_object(self.rt.store, uri)
        if found is None:
            raise _azure_error(404, "BlobNotFound", "The specified blob does not exist.")
        self.rt.store.delete_file(found)
        return Response(
            b"", 202, headers={"x-ms-delete-type-permanent": "true", "x-ms-version": API_VERSION}
        )
