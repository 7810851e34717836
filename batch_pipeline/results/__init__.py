"""Provider result items -> normalized Arrow record batches -> the results and errors Parquet
tables (DESIGN.md "Parquet schemas"), streaming, with one row per request."""

from batch_pipeline.results.collect import BatchCollector, CollectStats, results_to_parquet
from batch_pipeline.results.context import BatchContext
from batch_pipeline.results.normalize import classify_item, normalize_finish_reason
from batch_pipeline.results.schema import ERROR_STAGES, ERRORS_SCHEMA, RESULTS_SCHEMA
from batch_pipeline.results.writer import PartitionWriter, WriterStats

__all__ = [
    "ERRORS_SCHEMA",
    "ERROR_STAGES",
    "RESULTS_SCHEMA",
    "BatchCollector",
    "BatchContext",
    "CollectStats",
    "PartitionWriter",
    "WriterStats",
    "classify_item",
    "normalize_finish_reason",
    "results_to_parquet",
]
