"""The root of the package's one exception hierarchy.

Every error the package raises on purpose derives from `BatchPipelineError`, whatever the layer:

BatchPipelineError
├── GatewayError          the Bifrost client (gateway/errors.py has its own tree below it)
├── InputRejected         an input file or table that cannot be submitted, every problem listed
├── InputChanged          an input rewritten while it was read
├── LayoutError           a file or partition name the data layout refuses (InputRefused: new
│                         content under a used name, known content under a new one)
├── StorageError          the data root cannot do what was asked (LockBusy, LockLost)
├── ManifestBusy          another process holds the same work on the same input
├── SubmissionError       submission stopped (SubmissionUncertain: a create's outcome unknown)
├── BudgetExceeded        submitting would pass a budget
├── PriceTableError       a price table that cannot be used
├── CollectError          an input cannot be collected (yet)
├── CancelError           nothing to cancel
├── RetryError            no retry wave can be written
└── PipelineError         the Dagster integration or the CLI cannot do what was asked

A message is one line a person can act on and never contains a secret, so callers (runs, the
CLI) can show `str(exc)` as it is.
"""

from __future__ import annotations


class BatchPipelineError(Exception):
    """Base of every error `batch_pipeline` raises on purpose; `str()` is one line, secret-free."""


class PipelineError(BatchPipelineError):
    """The Dagster integration or the command line cannot do what was asked."""
