"""The settings of an instance: defaults that work, one clear reason for a bad value, and a README
that documents every one of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from batch_pipeline import PipelineSettings, build_pipeline_defs
from batch_pipeline.inputs.template import RequestTemplate
from batch_pipeline.integration.resources import GatewayResource

README = Path(__file__).resolve().parents[2] / "README.md"


def _leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    found = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind is not RequestTemplate:
            found += _leaves(kind, f"{prefix}{name}.")
        else:
            found.append(f"{prefix}{name}")
    return found


def test_zero_config_defaults() -> None:
    settings = PipelineSettings(name="tickets")
    assert settings.root == "data/tickets" and settings.group_name == "tickets"
    assert settings.sensors.inbox.running is False  # submitting costs money
    assert settings.sensors.status.running is True
    gateway = GatewayResource.from_settings(settings.gateway)
    assert (gateway.base_url_env, gateway.api_key_env, gateway.virtual_key_env) == (
        "BIFROST_BASE_URL",
        "BIFROST_API_KEY",
        "BIFROST_VIRTUAL_KEY",
    )


def test_the_gateway_url_and_keys_are_read_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = GatewayResource.from_settings(PipelineSettings(name="t").gateway)
    monkeypatch.delenv("BIFROST_BASE_URL", raising=False)
    assert gateway.url == "http://localhost:8080"
    monkeypatch.setenv("BIFROST_BASE_URL", "http://127.0.0.1:9999")
    assert gateway.url == "http://127.0.0.1:9999"  # the same resource: read now, not at load
    assert gateway.with_base_url("http://127.0.0.1:1").url == "http://127.0.0.1:1"
    monkeypatch.setenv("BIFROST_API_KEY", "sk-bf-secret-1")
    assert "sk-bf-secret-1" not in repr(gateway) + str(gateway.model_dump())


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"name": "1st"}, "starts with a letter"),
        ({"name": "with-dash"}, "letters, digits and '_'"),
        ({"name": "t", "colour": "red"}, "Extra inputs are not permitted"),
        ({"name": "t", "sensors": {"status": {"interval_seconds": 0}}}, "more than 0"),
        ({"name": "t", "submit": {"max_cost_per_day_usd": -1}}, "must not be negative"),
        ({"name": "t", "alerts": {"max_error_rate": 2}}, "between 0 and 1"),
        ({"name": "t", "inputs": {"default_provider": "acme"}}, "unknown provider 'acme'"),
        ({"name": "t", "inputs": {"on_invalid": "ignore"}}, "'reject' or 'skip'"),
        ({"name": "t", "prices": {"gpt-4o": {"input_per_1m": 1}}}, "provider/model"),
        ({"name": "t", "submit": {"max_enqueued_tokens": {"acme/m": 5}}}, "provider/model"),
        (
            {"name": "t", "prices": {"openai/m": {"input_per_1m": -1, "output_per_1m": 1}}},
            "greater than or equal to 0",
        ),
    ],
)
def test_a_bad_setting_says_what_and_why(settings: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        build_pipeline_defs(settings)


def test_the_readme_documents_every_setting() -> None:
    table = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    missing = [path for path in _leaves(PipelineSettings) if f"`{path}`" not in table]
    assert missing == []


def test_a_blob_folder_is_checked_and_a_pasted_sas_token_is_not_echoed() -> None:
    folder = "https://acct.blob.core.windows.net/batches/in"
    providers = {"azure_input": "blob", "azure_blob_folder": folder}
    assert PipelineSettings(name="t", providers=providers).providers.azure_blob_folder == folder
    pasted = {**providers, "azure_blob_folder": f"{folder}?sv=2024-08-04&sig=Pr1v4teS1gnature"}
    with pytest.raises(ValidationError, match="must carry no query string") as caught:
        PipelineSettings(name="t", providers=pasted)
    assert "Pr1v4te" not in str(caught.value)
    elsewhere = {**providers, "azure_blob_folder": "https://example.com/batches"}
    with pytest.raises(ValidationError, match=r"not an https://ACCOUNT\.blob\.core\.windows\.net"):
        PipelineSettings(name="t", providers=elsewhere)
