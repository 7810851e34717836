"""A code location with one pipeline instance per provider setting the provider tests drive
(`batch-pipeline run -m provider_defs --pipeline NAME`): what a team with Gemini, Bedrock,
Vertex and Azure (blob input) models would put in its defs.yaml files. The blob endpoint is the
test emulator's, read from BP_TESTS_AZURE_BLOB_ENDPOINT when the module is imported;
`azure_blob_tidy` is `azure_blob` with `collect.delete_files_after`."""

import os

import dagster as dg

from batch_pipeline import build_pipeline_defs

INSTANCES = {
    "gemini_inline": {},
    "gemini_file": {"gemini_input": "file"},
    "bedrock": {
        "bedrock_role_arn": "arn:aws:iam::123456789012:role/bedrock-batch",
        "bedrock_output_s3_uri": "s3://bp-tests/bedrock-out",
    },
    "vertex": {"vertex_output_folder": "gs://bp-tests/vertex-out"},
    "azure_blob": {
        "azure_input": "blob",
        "azure_blob_folder": "https://bptests.blob.core.windows.net/batches/pipeline",
        "azure_blob_endpoint": os.environ.get(
            "BP_TESTS_AZURE_BLOB_ENDPOINT", "http://127.0.0.1:10000/bptests"
        ),
    },
}
INSTANCES["azure_blob_tidy"] = INSTANCES["azure_blob"]
TIDY = {"azure_blob_tidy"}

defs = dg.Definitions.merge(
    *(
        build_pipeline_defs(
            {
                "name": name,
                "providers": options,
                "inputs": {"settle_seconds": 0},
                "collect": {"delete_files_after": name in TIDY},
            }
        )
        for name, options in INSTANCES.items()
    )
)
