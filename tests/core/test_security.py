"""config/security.yaml and config/operators.yaml: exact errors for bad rules, deny by default."""

from __future__ import annotations

import shutil

import pytest

from cmp_pipelines.core.config import ConfigError
from cmp_pipelines.core.security import Refused, load_security, operator_identity
from cmp_pipelines.core.settings import PROJECT_ROOT


@pytest.fixture
def config(tmp_path):
    target = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", target)
    return target


def test_a_client_or_operator_without_a_configured_level_is_refused(config, monkeypatch):
    security = load_security(config)
    with pytest.raises(Refused) as none:
        security.authorize("API client LEGACY", None, "REGISTER_CARD")
    assert none.value.message == "API client LEGACY has no security level in configuration, so it may not REGISTER_CARD"
    with pytest.raises(Refused) as made_up:
        security.authorize("API client X", "GOD", "APPROVE_REFUND")
    assert made_up.value.message == ("API client X (security level GOD) may not APPROVE_REFUND: config/security.yaml "
                                     "allows SUPERVISOR, ADMIN")
    monkeypatch.setenv("CMP_OPERATOR", "4111 1111 1111 1111")
    with pytest.raises(Refused) as typed:
        operator_identity(config)
    assert typed.value.message == "operator (not an operator name) is not in config/operators.yaml"
    monkeypatch.setenv("CMP_OPERATOR", "demo.supervisor")
    assert operator_identity(config) == ("demo.supervisor", "SUPERVISOR")


@pytest.mark.parametrize(("text", "message"), [
    ("security_levels: [AGENT]\noperations: {CREATE_ACCOUNT: [ADMIN]}",
     "'ADMIN' is not one of security_levels (AGENT)"),
    ("security_levels: [AGENT]\noperations: {CREATE_ACCOUNT: [AGENT], LAUNCH_ROCKET: [AGENT]}",
     "is not an operation; use CREATE_ACCOUNT, SET_PAYMENT_TYPE"),
    ("security_levels: [agent]\noperations: {}", "'agent' is not a security level name"),
])
def test_a_bad_rule_is_a_configuration_error_naming_it(config, text, message):
    (config / "security.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_security(config)
    assert message in str(caught.value)
    assert "security.yaml" in str(caught.value)
