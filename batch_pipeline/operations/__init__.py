"""The operations on batches: submit, poll, collect, cancel, retry, outcomes, costs, alerts.

Plain Python over the gateway client and the ledger; the Dagster integration calls these.
"""
