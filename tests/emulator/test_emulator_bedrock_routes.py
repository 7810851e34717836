"""The `/bedrock` integration driven by boto3's bedrock and s3 clients, as Bifrost's own SDK
tests call them: put the records, create the job, poll, read the output, stop, list."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from batch_pipeline.emulator import EmbeddedEmulator

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
KEYS = {"region_name": "us-west-2", "aws_access_key_id": "x", "aws_secret_access_key": "y"}


@pytest.fixture
def gateway(emulator_factory) -> EmbeddedEmulator:
    return emulator_factory(bedrock_min_records=2, bedrock_role_arn="arn:aws:iam::1:role/batch")


def _records(count: int) -> bytes:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20}
    return "".join(
        json.dumps(
            {
                "recordId": f"r{i}",
                "modelInput": {**body, "messages": [{"role": "user", "content": f"q{i}"}]},
            }
        )
        + "\n"
        for i in range(count)
    ).encode()


def test_job_flow_with_s3(gateway: EmbeddedEmulator) -> None:
    bedrock = boto3.client("bedrock", endpoint_url=f"{gateway.base_url}/bedrock", **KEYS)
    s3 = boto3.client("s3", endpoint_url=f"{gateway.base_url}/bedrock/files", **KEYS)
    etag = s3.put_object(
        Bucket="b", Key="in/batch.jsonl", Body=_records(3), ContentType="application/jsonl"
    )["ETag"].strip('"')
    assert etag == "s3://b/in/batch.jsonl"
    assert s3.head_object(Bucket="b", Key="in/batch.jsonl", IfMatch=etag)["ContentLength"] == len(
        _records(3)
    )
    job = bedrock.create_model_invocation_job(
        jobName="bifrost-test-batch-1",
        modelId=MODEL,
        roleArn="",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": etag, "s3InputFormat": "JSONL"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://b/bifrost-batch-output/"}},
    )
    arn = job["jobArn"]
    deadline = time.monotonic() + 10
    while (status := bedrock.get_model_invocation_job(jobIdentifier=arn)["status"]) not in (
        "Completed",
        "Failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status == "Completed"
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket="b", Prefix="bifrost-batch-output/")["Contents"]
    ]
    out_key = next(k for k in keys if k.endswith(".jsonl.out"))
    lines = s3.get_object(Bucket="b", Key=out_key)["Body"].read().decode().splitlines()
    assert {json.loads(line)["recordId"] for line in lines} == {"r0", "r1", "r2"}
    summaries = bedrock.list_model_invocation_jobs(maxResults=10)["invocationJobSummaries"]
    assert summaries[0]["jobArn"] == arn
    s3.delete_object(Bucket="b", Key="in/batch.jsonl", IfMatch=etag)


def test_stop_job(emulator_factory) -> None:
    gateway = emulator_factory(bedrock_min_records=2, requests_per_second=5)
    bedrock = boto3.client("bedrock", endpoint_url=f"{gateway.base_url}/bedrock", **KEYS)
    s3 = boto3.client("s3", endpoint_url=f"{gateway.base_url}/bedrock/files", **KEYS)
    etag = s3.put_object(Bucket="b", Key="in.jsonl", Body=_records(30))["ETag"].strip('"')
    arn = bedrock.create_model_invocation_job(
        jobName="stopme",
        modelId=MODEL,
        roleArn="arn:aws:iam::1:role/r",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": etag}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://b/out/"}},
    )["jobArn"]
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    deadline = time.monotonic() + 10
    while (status := bedrock.get_model_invocation_job(jobIdentifier=arn)["status"]) != "Stopped":
        assert status == "Stopping" and time.monotonic() < deadline
        time.sleep(0.05)
