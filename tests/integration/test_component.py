"""BatchPipelineComponent as a data team adds it: found by `dg`, scaffolded into their project,
two instances in YAML beside their own definitions (which have resources named `pipeline` and
`gateway` too), and `batch-pipeline run -m <their module>` through a gateway that wants both an
API key and a virtual key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster.components.testing import create_defs_folder_sandbox
from driver_support import run
from pipeline_support import anthropic_lines, chat_lines, counters, write_input

from batch_pipeline import BatchPipelineComponent
from batch_pipeline.integration.driver import PipelineDriver
from batch_pipeline.integration.loading import pipelines_in

BIN = Path(sys.executable).parent
COMPONENT = "batch_pipeline.BatchPipelineComponent"
THEIR_DEFS = """
import dagster as dg


class Settings(dg.ConfigurableResource):
    label: str


@dg.asset
def orders() -> int:
    return 3


@dg.definitions
def defs() -> dg.Definitions:
    # resource keys a pipeline of ours once used: they must not clash
    return dg.Definitions(
        assets=[orders],
        resources={"pipeline": Settings(label="theirs"), "gateway": Settings(label="theirs too")},
    )
"""


def _instance_yaml(name: str, root: Path, gateway: str, **more: object) -> dict:
    attributes = {"name": name, "data_root": str(root), "gateway": {"base_url": gateway}, **more}
    return {"type": COMPONENT, "attributes": attributes}


def test_two_instances_beside_the_users_own_definitions(
    emulator_factory, instance, tmp_path: Path
) -> None:
    tickets_gateway, claims_gateway = emulator_factory(), emulator_factory()
    tickets_root, claims_root = tmp_path / "tickets", tmp_path / "claims"
    with create_defs_folder_sandbox() as sandbox:
        (sandbox.defs_folder_path / "orders.py").write_text(THEIR_DEFS)
        sandbox.scaffold_component(
            BatchPipelineComponent,
            defs_path="tickets",
            defs_yaml_contents=_instance_yaml(
                "tickets", tickets_root, tickets_gateway.base_url, inputs={"settle_seconds": 0}
            ),
        )
        sandbox.scaffold_component(
            BatchPipelineComponent,
            defs_path="claims",
            defs_yaml_contents=_instance_yaml("claims", claims_root, claims_gateway.base_url),
        )
        with sandbox.build_all_defs() as defs:
            dg.Definitions.validate_loadable(defs)
            keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
            ours = {
                "inbox",
                "batch_input",
                "submitted_batches",
                "batch_results",
                "batch_errors",
                "batch_outcomes",
            }
            assert keys == {"orders"} | {f"{n}/{a}" for n in ("tickets", "claims") for a in ours}
            assert pipelines_in(defs) == ["claims", "tickets"]
            assert {"pipeline", "gateway", "tickets_gateway", "claims_data"} <= set(defs.resources)
            jobs = {j.name for j in defs.resolve_all_job_defs()}
            assert {"tickets_submit", "claims_submit", "tickets_collect", "claims_collect"} <= jobs
            sensors = {s.name for s in defs.sensors}
            assert sensors == {
                f"{n}_{s}" for n in ("tickets", "claims") for s in ("inbox_sensor", "status_sensor")
            }

            write_input(tickets_root, "week1", chat_lines(6, fail={2: 400}))
            summary = run(PipelineDriver(defs, "tickets", instance), tickets_root, ["week1"])
    assert summary.ok, summary.render()
    assert [(f.results, f.errors) for f in summary.files] == [(5, 1)]
    rows = duckdb.sql(
        f"select count(*) from read_parquet('{tickets_root}/results/*/*.parquet')"
    ).fetchall()
    assert rows == [(5,)]
    assert counters(tickets_gateway.base_url)["batches_created"] == 1
    assert counters(claims_gateway.base_url)["requests_by_route"] == {}  # the other gateway
    assert not claims_root.exists()  # the other instance's data root: untouched


def test_the_scaffolded_instance_is_named_after_its_folder() -> None:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(BatchPipelineComponent, defs_path="my_batches")
        assert "name: my_batches" in (path / "defs.yaml").read_text()
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, BatchPipelineComponent)
            assert component.root == "data/my_batches"
            assert pipelines_in(defs) == ["my_batches"]


def test_a_bad_attribute_fails_the_load_naming_it() -> None:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            BatchPipelineComponent,
            defs_path="bad",
            defs_yaml_contents={"type": COMPONENT, "attributes": {"name": "bad", "colour": "red"}},
        )
        with pytest.raises(Exception, match=r"defs\.yaml") as info, sandbox.build_all_defs():
            pass
        assert path.exists()
    told = "".join(traceback.format_exception(info.value))
    assert "colour" in told and "Extra inputs are not permitted" in told


def _dg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIRTUAL_ENV": str(BIN.parent), "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "dg"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.slow
def test_dg_lists_the_component_and_scaffolds_a_working_defs_yaml(tmp_path: Path) -> None:
    """In a project of the user's own, with this package installed in its environment."""
    project = tmp_path / "their_project"
    (project / "their_project" / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        textwrap.dedent("""
            [project]
            name = "their-project"
            version = "0.1.0"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "their_project"
        """)
    )
    (project / "their_project" / "__init__.py").touch()
    (project / "their_project" / "definitions.py").write_text(  # as create-dagster writes it
        textwrap.dedent("""
            from pathlib import Path

            import dagster as dg


            @dg.definitions
            def defs():
                return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
        """)
    )
    (project / "their_project" / "defs" / "__init__.py").touch()
    (project / "their_project" / "defs" / "orders.py").write_text(THEIR_DEFS)
    listed = _dg("list", "components", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert COMPONENT in {c["key"] for c in json.loads(listed.stdout)["items"]}
    scaffolded = _dg("scaffold", "defs", COMPONENT, "support_tickets", cwd=project)
    assert scaffolded.returncode == 0, scaffolded.stderr
    written = (project / "their_project" / "defs" / "support_tickets" / "defs.yaml").read_text()
    assert f"type: {COMPONENT}" in written and "name: support_tickets" in written
    checked = _dg("check", "defs", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("lines", [chat_lines, anthropic_lines], ids=["openai", "anthropic"])
def test_run_through_the_users_module_sends_the_api_key_and_the_virtual_key(
    emulator_factory, tmp_path: Path, lines
) -> None:
    """`batch-pipeline run -m their_defs --pipeline keyed`: the keys the instance names are
    read from the environment and sent on every call; without the virtual key, one clear line."""
    key, virtual = "sk-bf-their-api-key-1", "sk-bf-their-virtual-key-2"
    emulator = emulator_factory(api_keys=(key,), virtual_keys=(virtual,))
    root = tmp_path / "data"
    (tmp_path / "their_defs.py").write_text(
        THEIR_DEFS.replace("@dg.definitions\ndef defs", "def own")
        + textwrap.dedent(f"""
            import batch_pipeline

            defs = dg.Definitions.merge(
                own(),
                batch_pipeline.build_pipeline_defs(
                    {{
                        "name": "keyed",
                        "data_root": {str(root)!r},
                        "gateway": {{"api_key_env": "THEIR_KEY", "virtual_key_env": "THEIR_VK"}},
                    }}
                ),
            )
        """)
    )
    source = write_input(tmp_path / "incoming", "batch", lines(5))
    command = [
        str(BIN / "batch-pipeline"),
        "run",
        str(source),
        "-m",
        "their_defs",
        "--pipeline",
        "keyed",
        "--gateway",
        emulator.base_url,
        "--poll-interval",
        "0.1",
    ]
    base = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIFROST_API_KEY")}
    refused = subprocess.run(
        command, cwd=tmp_path, env={**base, "THEIR_KEY": key}, capture_output=True, text=True
    )
    assert refused.returncode == 77 and "Traceback" not in refused.stderr + refused.stdout
    assert (
        "401 from the gateway (" in refused.stdout and "virtual key is required" in refused.stdout
    )
    assert "check THEIR_KEY / THEIR_VK" in refused.stdout  # the variables the instance names
    assert counters(emulator.base_url)["batches_created"] == 0
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env={**base, "THEIR_KEY": key, "THEIR_VK": virtual},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every input line accounted for: yes" in done.stdout
    assert key not in done.stdout + done.stderr and virtual not in done.stdout + done.stderr
    results = duckdb.sql(f"select count(*) from read_parquet('{root}/results/*/*.parquet')")
    assert results.fetchall() == [(5,)]
