"""A code location with one pipeline instance per provider setting the provider tests drive
(`batch-pipeline run -m provider_defs --pipeline NAME`): what a team with Gemini, Bedrock and
Vertex models would put in its defs.yaml files."""

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
}

defs = dg.Definitions.merge(
    *(
        build_pipeline_defs({"name": name, "providers": options, "inputs": {"settle_seconds": 0}})
        for name, options in INSTANCES.items()
    )
)
