"""This package's own code location: one pipeline instance per folder, each a `defs.yaml`."""
