"""Bifrost's `/bedrock` integration (boto3's `bedrock` and `s3` clients): model-invocation jobs
on `/bedrock/model-invocation-job...` and S3 objects on `/bedrock/files/{bucket}/{key}`. The
provider comes from `x-model-provider` (default `bedrock`); errors are AWS-shaped (JSON for
Bedrock, XML for S3)."""

from __future__ import annotations

import io
from typing import Any
from xml.sax.saxutils import escape

from starlette.responses import Response

from batch_pipeline.emulator.batches import ProviderBatches
from batch_pipeline.emulator.bedrock_batches import NATIVE
from batch_pipeline.emulator.errors import ApiError, bad_request
from batch_pipeline.emulator.integration import IntegrationRoutes, Route, rfc3339
from batch_pipeline.emulator.responses import json_response
from batch_pipeline.emulator.v1_routes import Call, read_json

JOB = ("bedrock", "model-invocation-job")
FILES = ("bedrock", "files")


def decode_aws_chunked(raw: bytes) -> bytes:
    """The payload of an `aws-chunked` body (`<hex size>[;ext]\\r\\n<data>\\r\\n`... then
    trailers), as boto3 sends uploads with a trailing checksum."""
    out, stream = bytearray(), io.BytesIO(raw)
    while True:
        header = stream.readline()
        if not header:
            break
        size = int(header.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        out += stream.read(size)
        stream.readline()
    return bytes(out)


class BedrockRoutes(IntegrationRoutes):
    """The routes boto3 calls with `endpoint_url=<bifrost>/bedrock` (and `/bedrock/files`)."""

    def routes(self) -> list[Route]:
        return [
            ("POST", JOB, "batch_create", self.job_create),
            ("GET", ("bedrock", "model-invocation-jobs"), "batch_list", self.job_list),
            ("GET", (*JOB, "**"), "batch_retrieve", self.job_get),
            ("POST", (*JOB, "**"), "batch_cancel", self.job_stop),
            ("GET", (*FILES, "*"), "file_list", self.object_list),
            ("PUT", (*FILES, "*", "**"), "file_upload", self.object_put),
            ("GET", (*FILES, "*", "**"), "file_content", self.object_get),
            ("HEAD", (*FILES, "*", "**"), "file_retrieve", self.object_head),
            ("DELETE", (*FILES, "*", "**"), "file_delete", self.object_delete),
        ]

    def render_error(
        self, exc: ApiError, request_type: str | None, provider: str | None
    ) -> Response:
        """ToBedrockError (JSON and `x-amzn-ErrorType`); the S3 routes answer S3's XML."""
        status = exc.http_status
        kind = exc.type or ("InternalServerException" if status >= 500 else "ValidationException")
        headers = {**exc.headers, "x-amzn-ErrorType": kind}
        if request_type and request_type.startswith("file_"):
            xml = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{escape(kind)}</Code>"
                f"<Message>{escape(exc.message)}</Message></Error>"
            )
            return Response(xml, status, headers=headers, media_type="application/xml")
        return json_response({"message": exc.message}, status, headers)

    def _provider(self, call: Call) -> ProviderBatches:
        return self.header_provider(call, call.request_type, "bedrock")

    def _job(self, behaviour: ProviderBatches, batch_id: str) -> dict[str, Any]:
        """GetModelInvocationJob's body from the unified batch (PartiallyCompleted reads
        Failed: the unified status is mapped back)."""
        batch = self.service.batch(behaviour, batch_id)
        status = NATIVE.get(batch.status, batch.status)
        ended = next(
            (
                batch.times[k]
                for k in ("completed_at", "failed_at", "cancelled_at", "expired_at")
                if k in batch.times
            ),
            None,
        )
        body = {
            "jobArn": batch.id,
            "jobName": batch.native.get("job_name"),
            "modelId": batch.model,
            "roleArn": batch.native.get("role_arn"),
            "status": status,
            "submitTime": rfc3339(batch.created_ts),
            "lastModifiedTime": rfc3339(max([batch.created_ts, *batch.times.values()])),
            "endTime": rfc3339(ended),
            "inputDataConfig": {
                "s3InputDataConfig": {"s3Uri": batch.input_file_id, "s3InputFormat": "JSONL"}
            },
            "outputDataConfig": {
                "s3OutputDataConfig": {"s3Uri": batch.native.get("output_s3_uri")}
            },
            "jobExpirationTime": rfc3339(batch.expires_ts),
        }
        if batch.errors:
            body["message"] = batch.errors[0].get("message")
        return {k: v for k, v in body.items() if v is not None}

    async def job_create(self, call: Call) -> Response:
        behaviour = self._provider(call)
        body = await read_json(call.request, self.rt.config.max_body_bytes)
        if not isinstance(body, dict):
            raise bad_request("Invalid request payload")
        input_uri = ((body.get("inputDataConfig") or {}).get("s3InputDataConfig") or {}).get(
            "s3Uri"
        )
        output_uri = ((body.get("outputDataConfig") or {}).get("s3OutputDataConfig") or {}).get(
            "s3Uri"
        )
        create: dict[str, Any] = {
            "model": f"{behaviour.name}/{body.get('modelId', '')}",
            "input_file_id": input_uri,
            "role_arn": body.get("roleArn") or None,
            "output_s3_uri": output_uri,
            "metadata": {"job_name": body["jobName"]} if body.get("jobName") else None,
        }
        view = await self.service.create(behaviour, {k: v for k, v in create.items() if v})
        return json_response({"jobArn": view["id"]})

    async def job_list(self, call: Call) -> Response:
        """`nextToken` is never returned: Bedrock's list never sets it in Bifrost."""
        behaviour = self._provider(call)
        raw = call.request.query_params.get("maxResults", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else 20
        page = self.service.list(behaviour, limit, None, call.started)
        summaries = [self._job(behaviour, item["id"]) for item in page["data"]]
        return json_response({"invocationJobSummaries": summaries})

    async def job_get(self, call: Call) -> Response:
        behaviour = self._provider(call)
        return json_response(self._job(behaviour, call.params[0]))

    async def job_stop(self, call: Call) -> Response:
        arn, _, action = call.params[0].rpartition("/")
        if action != "stop":
            raise ApiError(404, "unknown operation", type="UnknownOperationException")
        behaviour = self._provider(call)
        await self.service.cancel(behaviour, arn)
        return json_response({})

    # S3
    async def object_put(self, call: Call) -> Response:
        behaviour = self._provider(call)
        raw = await call.request.body()
        headers = call.request.headers
        if "aws-chunked" in headers.get("content-encoding", "") or headers.get(
            "x-amz-content-sha256", ""
        ).startswith("STREAMING-"):
            raw = decode_aws_chunked(raw)
        bucket, key = call.params
        prefix, _, name = key.rpartition("/")
        fields = {"s3_bucket": bucket, "s3_prefix": prefix}
        view = await self.service.upload(
            behaviour,
            io.BytesIO(raw),
            filename=name,
            purpose="batch",
            fields=fields,
            content_type=headers.get("content-type"),
        )
        return Response(b"", 200, headers={"ETag": f'"{view["id"]}"'})

    def _object_id(self, call: Call) -> str:
        return f"s3://{call.params[0]}/{call.params[1]}"

    async def object_get(self, call: Call) -> Response:
        behaviour = self._provider(call)
        download = self.service.file_content(behaviour, self._object_id(call), call.request_type)
        download.raw_headers.append((b"etag", f'"{self._object_id(call)}"'.encode()))
        return download

    def _if_match(self, call: Call) -> str:
        """Bifrost reads the file id from `If-Match` (boto3's `IfMatch=`)."""
        file_id = call.request.headers.get("if-match", "").strip('"')
        if not file_id:
            raise ApiError(None, "file_id (S3 URI) is required", bifrost=True)
        return file_id

    async def object_head(self, call: Call) -> Response:
        behaviour = self._provider(call)
        view = self.service.file_retrieve(behaviour, self._if_match(call))
        headers = {"Content-Length": str(view["bytes"]), "ETag": f'"{view["id"]}"'}
        return Response(b"", 200, headers=headers)

    async def object_delete(self, call: Call) -> Response:
        behaviour = self._provider(call)
        await self.service.file_delete(behaviour, self._if_match(call))
        return Response(b"", 204)

    async def object_list(self, call: Call) -> Response:
        """ListObjectsV2 as XML."""
        behaviour = self._provider(call)
        query = call.request.query_params
        bucket = call.params[0]
        listing = {"s3_bucket": bucket, "s3_prefix": query.get("prefix", "")}
        page = self.service.file_list(behaviour, listing, int(query.get("max-keys") or 1000))
        contents = "".join(
            f"<Contents><Key>{escape(item['id'].removeprefix(f's3://{bucket}/'))}</Key>"
            f"<Size>{item['bytes']}</Size><LastModified>{rfc3339(item['created_at'])}"
            f"</LastModified></Contents>"
            for item in page["data"]
        )
        xml = (
            "<?xml version='1.0' encoding='UTF-8'?>"
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(query.get('prefix', ''))}</Prefix>"
            f"<KeyCount>{len(page['data'])}</KeyCount><IsTruncated>false</IsTruncated>"
            f"{contents}</ListBucketResult>"
        )
        return Response(xml, 200, media_type="application/xml")
