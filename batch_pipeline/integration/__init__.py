"""The Dagster integration: settings -> factory -> assets, checks, jobs, sensors, schedule and
resources of one pipeline instance; the component that reads the settings from YAML; and the
driver that runs loaded definitions in the foreground (the CLI and the tests use it)."""
