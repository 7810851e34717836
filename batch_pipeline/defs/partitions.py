"""One dynamic partition per input file; its key is the file name without `.jsonl`."""

import dagster as dg

input_files = dg.DynamicPartitionsDefinition(name="input_files")
