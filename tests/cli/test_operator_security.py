"""CLI operators carry the security level config/operators.yaml gives the identity in $CMP_OPERATOR: set-up commands
refuse (exit 2, naming the rule) an operator whose level is not allowed, an unknown one, or none at all."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main


def cli(*args, operator: str | None):
    env = {"CMP_OPERATOR": operator} if operator is not None else {"CMP_OPERATOR": ""}
    return CliRunner().invoke(main, list(args), env=env)


def refunds(platform) -> list[tuple]:
    return platform.query("SELECT refund_id, amount_minor FROM card_refunds ORDER BY refund_id")


@pytest.fixture
def card_account(platform):
    on_file = cli("accounts", "set-payment-type", "ACC00000002", "RECURRING_CARD", "--card-token", "tok_sec_0002",
                  "--last-four", "4242", operator="demo.agent")
    assert on_file.exit_code == 0, on_file.output
    return platform


@pytest.mark.parametrize(("operator", "message"), [
    (None, "Error: refused: no operator identity: set CMP_OPERATOR to your name in config/operators.yaml"),
    ("mallory", "Error: refused: operator mallory is not in config/operators.yaml"),
    ("demo.agent", "Error: refused: operator demo.agent (security level AGENT) may not APPROVE_REFUND: "
                   "config/security.yaml allows SUPERVISOR, ADMIN"),
])
def test_a_refund_is_refused_with_exit_2_naming_the_rule(card_account, operator, message):
    refused = cli("accounts", "approve-refund", "ACC00000002", "12.50", operator=operator)
    assert (refused.exit_code, refused.output.strip()) == (2, message)
    assert refunds(card_account) == []


def test_a_supervisor_approves_the_refund(card_account):
    approved = cli("accounts", "approve-refund", "ACC00000002", "12.50", "--due", "2026-12-24",
                   operator="demo.supervisor")
    assert approved.exit_code == 0, approved.output
    assert approved.output.strip() == ("refund RFACC00000002-001 approved by demo.supervisor: 12.50 to the card on "
                                       "file of ACC00000002")
    assert refunds(card_account) == [("RFACC00000002-001", 1250)]


def test_account_creation_follows_the_payment_term_default_of_the_operators_level(platform):
    refused = cli("accounts", "create", "ACCSEC0001", "--name", "Dee Dee", "--payment-type", "DIRECT_DEBIT",
                  operator="demo.agent")
    assert refused.exit_code == 2
    assert refused.output.strip() == ("Error: refused: operator demo.agent security level 'AGENT' may not use the "
                                      "DIRECT_DEBIT payment term default 'D14' (allowed: SUPERVISOR, ADMIN)")
    assert platform.query("SELECT count(*) FROM accounts WHERE account_number = 'ACCSEC0001'") == [(0,)]
    manual = cli("accounts", "create", "ACCSEC0001", "--name", "Dee Dee", operator="demo.agent")
    assert manual.exit_code == 0 and json.loads(manual.output)["payment_term"] == "D14"
    dd = cli("accounts", "create", "ACCSEC0002", "--name", "Dee Dee", "--payment-type", "DIRECT_DEBIT",
             operator="demo.supervisor")
    assert dd.exit_code == 0 and json.loads(dd.output)["payment_type"] == "DIRECT_DEBIT"


def test_a_level_cannot_be_claimed_on_the_command_line(platform):
    claimed = cli("accounts", "create", "ACCSEC0003", "--name", "X", "--security-level", "ADMIN", operator="demo.agent")
    assert claimed.exit_code == 2 and "No such option '--security-level'" in claimed.output
    assert platform.query("SELECT count(*) FROM accounts WHERE account_number = 'ACCSEC0003'") == [(0,)]


def test_the_operator_is_recorded_on_what_it_changed(platform):
    changed = cli("accounts", "set-payment-type", "ACC00000004", "RECURRING_CARD", "--card-token", "tok_sec_0004",
                  operator="demo.agent")
    assert changed.exit_code == 0, changed.output
    assert platform.query("SELECT old_type, new_type, cause FROM payment_type_changes WHERE account_number = "
                          "'ACC00000004'") == [("MANUAL", "RECURRING_CARD", "cli demo.agent")]
