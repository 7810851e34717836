"""The command a summary prints to read the results back, for every kind of data root."""

from __future__ import annotations

from batch_pipeline.ledger.storage import DataPath, is_local


def read_back_command(root: DataPath) -> str:
    """A shell line that counts the result rows per input file with DuckDB. On `s3://`, DuckDB
    reads through s3fs (installed with the `s3` extra), which follows the AWS SDK's own settings
    (AWS_ENDPOINT_URL for MinIO and other S3-compatible stores), so nothing is downloaded and no
    credential is written in the line."""
    table = f"{root}/results/*/*.parquet"
    query = (
        "select input_file, count(*) "
        f"from read_parquet('{table}', hive_partitioning=true, union_by_name=true) group by all"
    )
    if not is_local(root):
        return (
            'python -c "import duckdb, s3fs; db = duckdb.connect(); '
            f'db.register_filesystem(s3fs.S3FileSystem()); print(db.sql(\\"{query}\\"))"'
        )
    return f'python -c "import duckdb; print(duckdb.sql(\\"{query}\\"))"'
