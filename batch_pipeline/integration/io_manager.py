"""What a downstream asset gets when it takes an instance's results, errors or outcomes as input.

    @dg.asset(ins={"labels": dg.AssetIn(key=["tickets", "batch_results"])})
    def review_labels(labels: pd.DataFrame) -> ...

The IO manager reads the Parquet the collect wrote, only the partitions asked for (one for a
same-partitioned downstream, every collected one for an unpartitioned downstream), and hands it
over as the input's annotation says: `pandas.DataFrame`, `pyarrow.Table`, `polars.DataFrame`,
or lazily, without reading it, `polars.LazyFrame` or `pyarrow.dataset.Dataset`. Each row keeps
its partition as `input_file` (outcomes: `original_file`). The assets write their own Parquet
(they return MaterializeResult), so nothing is ever stored through here.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from batch_pipeline.integration.resources import DataRootResource
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.storage import DataPath, is_local, parquet_schema
from batch_pipeline.operations.outcomes import outcomes_file
from batch_pipeline.operations.retry import attempt_of
from batch_pipeline.results.schema import ERRORS_SCHEMA, OUTCOMES_SCHEMA, RESULTS_SCHEMA

# What a downstream asset gets before anything was collected.
_EMPTY = {
    "batch_results": RESULTS_SCHEMA,
    "batch_errors": ERRORS_SCHEMA,
    "batch_outcomes": OUTCOMES_SCHEMA,
}


class BatchTablesIOManager(dg.ConfigurableIOManager):
    """Loads `<name>/batch_results`, `<name>/batch_errors` and `<name>/batch_outcomes`."""

    data: DataRootResource

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is not None:
            raise dg.Failure(
                description=f"{context.asset_key.to_user_string()} writes its own Parquet; "
                "it returns no value to store"
            )

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        layout = self.data.layout()
        table = key.path[-1]
        names = context.asset_partition_keys if context.has_asset_partitions else []
        files, folder, column = _files(layout, table, names)
        return _as(context.dagster_type.typing_type, files, folder, column, _EMPTY[table])


def _files(
    layout: DataLayout, table: str, names: Sequence[str]
) -> tuple[list[DataPath], DataPath, str]:
    """The Parquet files of `table` for these partitions that exist, their hive folder, and the
    column the folder names."""
    if table == "batch_outcomes":
        originals = dict.fromkeys(attempt_of(n)[0] for n in names)
        paths = [outcomes_file(layout, o) for o in originals]
        return [p for p in paths if p.exists()], layout.root / "outcomes", "original_file"
    file_of = layout.results_file if table == "batch_results" else layout.errors_file
    folder = layout.root / ("results" if table == "batch_results" else "errors")
    return [p for n in names if (p := file_of(n)).exists()], folder, "input_file"


def _as(kind: Any, files: list[DataPath], folder: DataPath, column: str, empty: Any) -> Any:
    """The files as the annotation `kind` asks (a pyarrow Table when there is none), each row
    keeping its partition in `column`; `empty` is the schema when there is no file yet."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if is_local(folder):
        source: Any = [str(f) for f in files]
        filesystem, base = None, str(folder)
    else:
        source = [str(f).split("://", 1)[1] for f in files]
        filesystem, base = folder.fs, folder.path
    # partitions of different templates have different key and answer columns: take them all
    schema = pa.unify_schemas([parquet_schema(f) for f in files]) if files else empty
    if schema is not None and column not in schema.names:
        schema = schema.append(pa.field(column, pa.string()))
    dataset = ds.dataset(
        source,
        schema=schema,
        format="parquet",
        filesystem=filesystem,
        partitioning=ds.partitioning(flavor="hive"),
        partition_base_dir=base,
    )
    name = f"{getattr(kind, '__module__', '')}.{getattr(kind, '__name__', '')}"
    if name.endswith(".Dataset") and name.startswith("pyarrow"):
        return dataset
    if name.startswith("polars") and name.endswith("LazyFrame"):
        import polars as pl

        return pl.scan_pyarrow_dataset(dataset)
    table = dataset.to_table()
    if name.startswith("pandas") and name.endswith("DataFrame"):
        return table.to_pandas()
    if name.startswith("polars") and name.endswith("DataFrame"):
        import polars as pl

        return pl.from_arrow(table)
    return table
