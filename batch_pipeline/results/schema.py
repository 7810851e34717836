"""The Parquet tables every collect writes (DESIGN.md "Parquet schemas"), in one place."""

from __future__ import annotations

import pyarrow as pa

# Why a request ended up in the errors table; DESIGN.md fixes this vocabulary.
ERROR_STAGES: tuple[str, ...] = (
    "input",
    "batch",
    "request",
    "expired",
    "canceled",
    "missing",
    "parse",
)

COLLECTED_AT_TYPE = pa.timestamp("us", tz="UTC")

# Columns with one value per collect, filled in by the writer: which input file a request
# first came from and which attempt this is (retry waves write `<name>.retry-<n>` files).
PARTITION_FIELDS = (
    pa.field("original_file", pa.string()),
    pa.field("attempt", pa.int32()),
    pa.field("collected_at", COLLECTED_AT_TYPE),
)
PARTITION_COLUMNS = tuple(f.name for f in PARTITION_FIELDS)

RESULTS_SCHEMA = pa.schema(
    [
        pa.field("custom_id", pa.string()),
        pa.field("input_line", pa.int64()),
        pa.field("batch_id", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("model", pa.string()),
        pa.field("endpoint", pa.string()),
        pa.field("status_code", pa.int32()),
        pa.field("request_id", pa.string()),
        pa.field("output_text", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        # of prompt_tokens, served from the provider's cache; of completion_tokens, spent thinking
        pa.field("cached_tokens", pa.int64()),
        pa.field("reasoning_tokens", pa.int64()),
        pa.field("cost_usd", pa.float64()),  # at batch prices; null when the model has none
        pa.field("body", pa.string()),
        *PARTITION_FIELDS,
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("custom_id", pa.string()),
        pa.field("input_line", pa.int64()),
        pa.field("batch_id", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("status_code", pa.int32()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("retryable", pa.bool_()),
        pa.field("raw", pa.string()),
        *PARTITION_FIELDS,
    ]
)

# The outcomes view (operations/outcomes.py): one row per request of an original file, its final
# outcome across attempts; a table input's key and answer columns follow these.
OUTCOMES_SCHEMA = pa.schema(
    [
        pa.field("original_file", pa.string()),
        pa.field("custom_id", pa.string()),
        pa.field("outcome", pa.string()),  # succeeded or failed
        pa.field("attempt", pa.int32()),
        pa.field("input_file", pa.string()),
        *(RESULTS_SCHEMA.field(n) for n in ("input_line", "batch_id", "provider", "model")),
        *(ERRORS_SCHEMA.field(n) for n in ("status_code", "stage", "error_code")),
        *(ERRORS_SCHEMA.field(n) for n in ("error_message", "retryable")),
        *(RESULTS_SCHEMA.field(n) for n in ("output_text", "finish_reason", "total_tokens")),
        pa.field("collected_at", COLLECTED_AT_TYPE),
    ]
)

# Row value tuples in the writer's hot path follow these orders (the partition columns are added
# on write); each ends with its table's bulkiest column (body, raw), buffered as raw bytes.
RESULT_COLUMNS: tuple[str, ...] = tuple(
    n for n in RESULTS_SCHEMA.names if n not in PARTITION_COLUMNS
)
ERROR_COLUMNS: tuple[str, ...] = tuple(n for n in ERRORS_SCHEMA.names if n not in PARTITION_COLUMNS)

assert RESULT_COLUMNS[-1] == "body" and ERROR_COLUMNS[-1] == "raw"
