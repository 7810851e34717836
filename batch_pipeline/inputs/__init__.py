"""Input files: read, validate, normalize and shard JSONL request files (no Dagster here).

`validate_file` reports every problem of a file as `FILE:LINE: field: reason`; `prepare_input`
turns a file into content-addressed shards within provider limits under data/staging/<name>/.
"""

from batch_pipeline.inputs.models import (
    FileSummary,
    InputOptions,
    InputPlan,
    InputRejected,
    Problem,
    Shard,
    ShardLimits,
    ValidationReport,
)
from batch_pipeline.inputs.prepare import (
    content_sha256,
    prepare_input,
    read_shard_index,
    validate_file,
)

__all__ = [
    "FileSummary",
    "InputOptions",
    "InputPlan",
    "InputRejected",
    "Problem",
    "Shard",
    "ShardLimits",
    "ValidationReport",
    "content_sha256",
    "prepare_input",
    "read_shard_index",
    "validate_file",
]
