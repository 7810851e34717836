"""Azure blob input against the emulator: shards put as blobs under the folder, batches made
from `input_blob`, missing settings and failed puts stopping before any batch is made, the
failed requests collected from the error blob, and the blobs deleted by the cleanup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pipeline_support import arm, chat_lines, counters, write_input

from batch_pipeline.emulator import EmbeddedEmulator
from batch_pipeline.gateway import BifrostClient
from batch_pipeline.gateway.azure_blob import AzureBlobClient
from batch_pipeline.inputs import InputOptions, InputPlan, prepare_input
from batch_pipeline.ledger.layout import DataLayout
from batch_pipeline.ledger.manifest import ManifestStore
from batch_pipeline.operations.collect import CollectError, collect_partition, delete_batch_files
from batch_pipeline.operations.poll import refresh_statuses
from batch_pipeline.operations.submit import SubmissionError, submit_plan
from batch_pipeline.providers import ProviderOptions

FOLDER = "https://acct.blob.core.windows.net/batches/pipeline"
BLOB = ProviderOptions(azure_input="blob", azure_blob_folder=FOLDER)
TOKEN = "sv=2024-08-04&sp=rwc&sig=c2lnbmF0dXJl"


def _wait_until_ended(client: BifrostClient, store: ManifestStore, name: str) -> None:
    deadline = time.monotonic() + 20
    while not refresh_statuses(client, store, name).all_terminal:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.05)


def _blobs_under(emulator: EmbeddedEmulator, prefix: str) -> list[str]:
    listed = httpx.get(f"{emulator.base_url}/_emulator/objects", params={"prefix": prefix})
    return sorted(listed.json()["objects"])


def _plan(root: Path, name: str, fail: dict[int, int] | None = None) -> InputPlan:
    path = write_input(root, name, chat_lines(5, model="azure/gpt-4o-mini", fail=fail))
    return prepare_input(path, DataLayout.at(root).staging(name), InputOptions())


@pytest.fixture
def client(emulator: EmbeddedEmulator) -> Iterator[BifrostClient]:
    with BifrostClient(emulator.base_url, max_retry_seconds=5) as c:
        yield c


@pytest.fixture
def blobs(emulator: EmbeddedEmulator) -> Iterator[AzureBlobClient]:
    endpoint = f"{emulator.base_url}/azure-blob/acct"
    with AzureBlobClient(sas_token=TOKEN, endpoint=endpoint, max_retry_seconds=0) as c:
        yield c


def test_shards_go_as_blobs_and_a_rerun_puts_nothing_again(
    emulator: EmbeddedEmulator, client: BifrostClient, blobs: AzureBlobClient, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, "tickets")
    store = ManifestStore(tmp_path / "batches")
    first = submit_plan(client, store, plan, options=BLOB, blobs=blobs)
    again = submit_plan(client, store, plan, options=BLOB, blobs=blobs)
    assert [o.reused for o in first + again] == [False, True]
    shard = plan.shards[0]
    url = f"{FOLDER}/tickets/{shard.shard_id}.jsonl"
    batch = httpx.get(
        f"{emulator.base_url}/v1/batches/{first[0].batch_id}", params={"provider": "azure"}
    ).json()
    assert batch["input_blob"] == url and "input_file_id" not in batch
    stored = httpx.get(f"{emulator.base_url}/_emulator/objects", params={"uri": url})
    assert stored.content == Path(shard.path).read_bytes()
    routes = counters(emulator.base_url)["requests_by_route"]
    assert (routes["blob_put"], routes["batch_create"], routes.get("file_upload")) == (1, 1, None)


@pytest.mark.parametrize(
    ("options", "with_blobs", "says"),
    [
        (
            ProviderOptions(azure_input="blob"),
            True,
            r"tickets: azure batches need the setting\(s\) providers\.azure_blob_folder",
        ),
        (BLOB, False, "needs a SAS token in the variable AZURE_STORAGE_SAS_TOKEN"),
    ],
)
def test_missing_settings_stop_before_anything_is_sent(
    emulator: EmbeddedEmulator,
    client: BifrostClient,
    blobs: AzureBlobClient,
    tmp_path: Path,
    options: ProviderOptions,
    with_blobs: bool,
    says: str,
) -> None:
    plan = _plan(tmp_path, "tickets")
    with pytest.raises(SubmissionError, match=says) as caught:
        submit_plan(
            client,
            ManifestStore(tmp_path / "batches"),
            plan,
            options=options,
            blobs=blobs if with_blobs else None,
        )
    assert "\n" not in str(caught.value)
    assert counters(emulator.base_url)["requests_by_route"] == {}


def test_a_failed_put_makes_no_batch_and_a_rerun_puts_the_same_blob(
    emulator: EmbeddedEmulator, client: BifrostClient, blobs: AzureBlobClient, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, "tickets")
    store = ManifestStore(tmp_path / "batches")
    arm(emulator.base_url, kind="server_error", status=503, routes=["blob_put"])
    with pytest.raises(SubmissionError, match=r"not put as a blob: PUT https://acct\.blob.*503"):
        submit_plan(client, store, plan, options=BLOB, blobs=blobs)
    assert counters(emulator.base_url)["batches_created"] == 0
    record = store.load("tickets").shards[plan.shards[0].shard_id]  # type: ignore[union-attr]
    assert record.state == "pending" and record.batch_id is None
    [outcome] = submit_plan(client, store, plan, options=BLOB, blobs=blobs)
    assert outcome.batch_id and counters(emulator.base_url)["batches_created"] == 1
    listed = _blobs_under(emulator, f"{FOLDER}/tickets/")
    assert listed == [f"{FOLDER}/tickets/{plan.shards[0].shard_id}.jsonl"]


def test_collect_reads_the_error_blob_or_says_what_it_needs(
    client: BifrostClient, blobs: AzureBlobClient, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, "tickets", fail={2: 500, 4: 404})
    store = ManifestStore(tmp_path / "batches")
    submit_plan(client, store, plan, options=BLOB, blobs=blobs)
    _wait_until_ended(client, store, "tickets")
    layout = DataLayout.at(tmp_path)
    with pytest.raises(CollectError, match="wrote its failed requests to a blob; reading it"):
        collect_partition(client, layout, store, "tickets")
    report = collect_partition(client, layout, store, "tickets", blobs=blobs)
    assert report.invariant.passed
    assert (report.results_rows, report.errors_rows) == (3, 2)
    assert report.errors_by_stage == {"request": 2}  # not "missing": read from the error blob


def test_cleanup_deletes_the_shard_output_and_error_blobs(
    emulator: EmbeddedEmulator, client: BifrostClient, blobs: AzureBlobClient, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, "tickets", fail={2: 500})
    store = ManifestStore(tmp_path / "batches")
    submit_plan(client, store, plan, options=BLOB, blobs=blobs)
    _wait_until_ended(client, store, "tickets")
    collect_partition(client, DataLayout.at(tmp_path), store, "tickets", blobs=blobs)
    shard_id = plan.shards[0].shard_id
    record = store.load("tickets").shards[shard_id]  # type: ignore[union-attr]
    urls = [record.input_blob, record.output_blob, record.error_blob]
    assert urls[0] == f"{FOLDER}/tickets/{shard_id}.jsonl" and all(urls)
    assert _blobs_under(emulator, f"{FOLDER}/") == sorted(urls)  # type: ignore[arg-type]

    problems = delete_batch_files(client, store, "tickets")  # no blob client: said, not lost
    needs = (
        "not deleted; deleting blobs needs providers.azure_input: blob and the SAS token in the "
        "variable providers.azure_blob_sas_env names"
    )
    assert problems == [f"{url}: {needs}" for url in urls]
    assert not store.load("tickets").shards[shard_id].files_deleted  # type: ignore[union-attr]
    assert len(_blobs_under(emulator, f"{FOLDER}/")) == 3

    assert delete_batch_files(client, store, "tickets", blobs) == []
    assert _blobs_under(emulator, f"{FOLDER}/") == []
    assert store.load("tickets").shards[shard_id].files_deleted  # type: ignore[union-attr]
    assert delete_batch_files(client, store, "tickets", blobs) == []  # done: nothing sent again
    assert counters(emulator.base_url)["requests_by_route"]["blob_delete"] == 3


def test_a_blob_that_cannot_be_deleted_holds_back_its_own_batch_only(
    emulator: EmbeddedEmulator, client: BifrostClient, blobs: AzureBlobClient, tmp_path: Path
) -> None:
    lines = chat_lines(3, model="azure/gpt-4o-mini") + chat_lines(3, model="azure/gpt-4o")
    for number, line in enumerate(lines, 1):
        line["custom_id"] = f"req-{number}"
    path = write_input(tmp_path, "two", lines)
    plan = prepare_input(path, DataLayout.at(tmp_path).staging("two"), InputOptions())
    store = ManifestStore(tmp_path / "batches")
    submit_plan(client, store, plan, options=BLOB, blobs=blobs)
    _wait_until_ended(client, store, "two")
    collect_partition(client, DataLayout.at(tmp_path), store, "two", blobs=blobs)
    arm(emulator.base_url, kind="server_error", status=503, routes=["blob_delete"], count=1)
    [problem] = delete_batch_files(client, store, "two", blobs)
    assert "HTTP 503 ServerBusy" in problem and "\n" not in problem
    first, second = store.load("two").shards.values()  # type: ignore[union-attr]
    assert (first.files_deleted, second.files_deleted) == (False, True)
    assert delete_batch_files(client, store, "two", blobs) == []  # the rest of the first, now
    assert _blobs_under(emulator, f"{FOLDER}/") == []
