"""API clients and payment provider configuration: each mistake is named by file, entry and field; keys are
only ever hashes; `cmp-pipelines api keys init` shows a key once and keeps its hash."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.config import ConfigError
from cmp_pipelines.core.config_payments import (
    hash_key,
    load_api_clients,
    load_provider_settings,
    read_key_hashes,
)
from cmp_pipelines.core.settings import PROJECT_ROOT

HASH = "a" * 64


@pytest.fixture
def config(tmp_path):
    folder = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", folder)
    return folder


def clients(config, text: str):
    (config / "api_clients.yaml").write_text(text)
    return load_api_clients(config)


@pytest.mark.parametrize(("text", "entry", "field", "why"), [
    ("api_clients: []", "-", "api_clients", "non-empty list"),
    ("api_clients:\n  - {client_id: AGENT1, channel: POS}", "AGENT1", "channel", "AGENT, SELFCARE, IVR"),
    ("api_clients:\n  - {channel: IVR}", "api_clients[0]", "client_id", "is required"),
    ("api_clients:\n  - {client_id: ivr, channel: IVR}", "ivr", "client_id", "A-Z"),
    ("api_clients:\n  - {client_id: IVR, channel: IVR}\n  - {client_id: IVR, channel: IVR}", "IVR", "client_id",
     "defined twice"),
    ("api_clients:\n  - {client_id: IVR, channel: IVR, key_sha256: my-secret-key}", "IVR", "key_sha256",
     "never the key itself"),
    ("api_clients:\n  - {client_id: IVR, channel: IVR, key: abc}", "IVR", "key", "unknown field"),
    ("api_clients:\n  - {client_id: IVR, channel: IVR, name: ''}", "IVR", "name", "non-empty"),
])
def test_api_client_mistakes_name_file_entry_and_field(config, text, entry, field, why):
    with pytest.raises(ConfigError) as caught:
        clients(config, text)
    error = caught.value
    assert (error.file.name, error.entry, error.field) == ("api_clients.yaml", entry, field)
    assert why in error.why
    assert "my-secret-key" not in error.why


def test_a_hash_in_config_or_issued_by_the_cli_authenticates(config, tmp_path, monkeypatch):
    loaded = clients(config, f"api_clients:\n  - {{client_id: IVR, channel: IVR, key_sha256: '{HASH}'}}\n"
                             "  - {client_id: AGENTVIEW, channel: AGENT}")
    assert loaded["IVR"].key_sha256 == HASH and loaded["AGENTVIEW"].key_sha256 is None
    monkeypatch.setenv("CMP_CONFIG_DIR", str(config))
    monkeypatch.setenv("CMP_KEYS_DIR", str(tmp_path / "keys"))
    result = CliRunner().invoke(main, ["api", "keys", "init"])
    assert result.exit_code == 0, result.output
    assert "IVR: has a key" in result.output
    key = result.output.split("AGENTVIEW (AGENT): ", 1)[1].split()[0]
    stored = (tmp_path / "keys" / "api_clients.sha256").read_text()
    assert key not in stored and hash_key(key) in stored
    assert (tmp_path / "keys" / "api_clients.sha256").stat().st_mode & 0o077 == 0
    assert load_api_clients(config, tmp_path / "keys")["AGENTVIEW"].key_sha256 == hash_key(key)
    again = CliRunner().invoke(main, ["api", "keys", "init", "--client", "AGENTVIEW"])
    assert "has a key" in again.output and read_key_hashes(tmp_path / "keys")["AGENTVIEW"] == hash_key(key)


@pytest.mark.parametrize(("change", "field", "why"), [
    ("provider: ADYEN", "provider", "SANDBOX, STRIPE"),
    ("hosted_page_url: ftp://x", "hosted_page_url", "http(s) URL"),
    ("reconcile_after_seconds: -1", "reconcile_after_seconds", "between 0 and 86400"),
    ("hosted_session_minutes: 0", "hosted_session_minutes", "between 1 and 1440"),
    ("callback_tolerance_seconds: '300'", "callback_tolerance_seconds", "must be an integer"),
    ("failure_event: null", "failure_event", "is required"),
    ("failure_event: {type: one_off, code: X}", "failure_event.type", "upper-case identifier"),
    ("retries: 3", "retries", "unknown field"),
])
def test_provider_setting_mistakes_name_file_entry_and_field(config, change, field, why):
    key = change.split(":")[0]
    lines = [line for line in (config / "payment_provider.yaml").read_text().splitlines()
             if not line.strip().startswith(f"{key}:")]
    lines.append(f"  {change}")
    (config / "payment_provider.yaml").write_text("\n".join(lines))
    with pytest.raises(ConfigError) as caught:
        load_provider_settings(config)
    assert (caught.value.file.name, caught.value.entry, caught.value.field) == \
        ("payment_provider.yaml", "payment_provider", field)
    assert why in caught.value.why


def test_the_shipped_configuration_loads():
    settings = load_provider_settings(PROJECT_ROOT / "config")
    assert settings.provider == "SANDBOX"
    assert (settings.failure_event.event_type, settings.failure_event.event_code) == \
        ("ONE_OFF_PAYMENT", "CARD_PAYMENT_FAILED")
    assert {c.channel for c in load_api_clients(PROJECT_ROOT / "config").values()} == {"AGENT", "SELFCARE", "IVR"}
