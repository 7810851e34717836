"""The ledger: where data lives under the data root, crash-safe manifests of what was submitted,
and the storage operations (local folder or s3://) everything else goes through."""
