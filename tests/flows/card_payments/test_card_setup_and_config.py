"""Payment set-up (payment type, card on file, refunds) and the rejection codes configuration: each bad input
gets an error naming the field (or the file, entry and field), and a card number is never echoed."""

from __future__ import annotations

import json
import shutil
from datetime import date

import pytest
import yaml
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.config import ConfigError, load_partners, load_rejection_codes
from cmp_pipelines.core.payment_setup import SetupError, approve_card_refund, set_payment_type
from cmp_pipelines.core.settings import PROJECT_ROOT
from tests.support.platform import NOW

PARTNERS = load_partners(PROJECT_ROOT / "config")


def setup(platform, account="ACC00000001", payment_type="RECURRING_CARD", **card):
    with platform.connect() as con:
        return set_payment_type(con, account, payment_type, partners=PARTNERS, now=NOW, cause="test", **card)


@pytest.mark.parametrize(("account", "payment_type", "card", "field", "fragment"), [
    ("ACC09999999", "MANUAL", {}, "account_number", "does not exist"),
    ("ACC00000001", "CHEQUE", {}, "payment_type", "use one of MANUAL, RECURRING_CARD, DIRECT_DEBIT"),
    ("ACC00000001", "RECURRING_CARD", {}, "card_token", "needs the provider's card token"),
    ("ACC00000001", "RECURRING_CARD", {"card_token": "4111111111111111"}, "card_token", "'************1111' looks"),
    ("ACC00000001", "RECURRING_CARD", {"card_token": "tok 1"}, "card_token", "6-64 letters"),
    ("ACC00000001", "RECURRING_CARD", {"card_token": "tok_abcdef", "last_four": "12a4"}, "last_four", "four digits"),
    ("ACC00000001", "RECURRING_CARD", {"card_token": "tok_abcdef", "expiry": "13/29"}, "expiry", "'13/29'"),
    ("ACC00000001", "RECURRING_CARD", {"card_token": "tok_abcdef", "expiry": "01/20"}, "expiry", "expired in 2020-01"),
    ("ACC00000001", "RECURRING_CARD", {"card_token": "tok_abcdef", "provider": "PAYPOINT"}, "provider",
     "'PAYPOINT' is not a configured card provider"),
    ("ACC00000001", "MANUAL", {"last_four": "1234"}, "card_token", "give the token too"),
    ("ACC00000001", "RECURRING_CARD", {"card_token": "tok_abcdef", "expiry": "4111111111111111"}, "expiry",
     "'************1111' is not a card expiry"),
    ("4111111111111111", "MANUAL", {}, "account_number", "'************1111' does not exist"),
])
def test_set_payment_type_refusals(platform, account, payment_type, card, field, fragment):
    with pytest.raises(SetupError) as caught:
        setup(platform, account, payment_type, **card)
    assert caught.value.field == field and fragment in caught.value.message
    assert "4111111111111111" not in str(caught.value)
    assert platform.query("SELECT count(*) FROM payment_cards")[0][0] == 0
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = 'ACC00000001'") == [("MANUAL",)]


def test_set_payment_type_records_the_card_and_the_change(platform):
    profile = setup(platform, card_token="tok_abcdef", last_four="4242", expiry="03/30")
    assert profile == {"account_number": "ACC00000001", "payment_type": "RECURRING_CARD", "suspended_until": None,
                       "payment_term": None,
                       "card": {"provider": "CARDPAY", "card_token": "tok_abcdef", "last_four": "4242",
                                "expiry": "2030-03"}}
    assert setup(platform, payment_type="MANUAL")["card"]["card_token"] == "tok_abcdef", "the card stays on file"
    assert setup(platform)["payment_type"] == "RECURRING_CARD", "a card registered earlier is enough"
    changes = platform.query("SELECT old_type, new_type, cause FROM payment_type_changes ORDER BY changed_at, rowid")
    assert changes == [("MANUAL", "RECURRING_CARD", "test"), ("RECURRING_CARD", "MANUAL", "test"),
                       ("MANUAL", "RECURRING_CARD", "test")]


@pytest.mark.parametrize(("amount", "field", "fragment"), [
    ("12.5", "amount", "two decimal places"), ("0.00", "amount", "more than 0.00"), ("-1.00", "amount", "two")])
def test_refund_refusals(platform, amount, field, fragment):
    setup(platform, card_token="tok_abcdef")
    with platform.connect() as con, pytest.raises(SetupError) as caught:
        approve_card_refund(con, "ACC00000001", amount, now=NOW)
    assert caught.value.field == field and fragment in caught.value.message


def test_refund_needs_a_card_on_file(platform):
    with platform.connect() as con, pytest.raises(SetupError, match="no card on file"):
        approve_card_refund(con, "ACC00000002", "1.00", now=NOW)


def test_refunds_are_numbered_per_account(platform):
    setup(platform, card_token="tok_abcdef")
    with platform.connect() as con:
        ids = [approve_card_refund(con, "ACC00000001", "1.00", now=NOW, due_on=date(2026, 12, 1)) for _ in range(2)]
    assert ids == ["RFACC00000001-001", "RFACC00000001-002"]


def test_cli_set_payment_type_and_refund(platform):
    runner = CliRunner()
    ok = runner.invoke(main, ["accounts", "set-payment-type", "ACC00000002", "RECURRING_CARD", "--card-token",
                              "tok_cli_0002", "--last-four", "0002", "--expiry", "2030-01"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["card"]["card_token"] == "tok_cli_0002"
    refused = runner.invoke(main, ["accounts", "set-payment-type", "ACC00000003", "RECURRING_CARD", "--card-token",
                                   "4111-1111-1111-1111"])
    assert refused.exit_code == 1
    assert "card_token: '************1111' looks like a card number" in refused.output
    assert "4111" not in refused.output
    refund = runner.invoke(main, ["accounts", "approve-refund", "ACC00000002", "7.25", "--due", "2026-12-24"])
    assert refund.exit_code == 0 and "refund RFACC00000002-001 approved" in refund.output
    shown = json.loads(runner.invoke(main, ["accounts", "show", "ACC00000002", "--json"]).output)
    assert shown["payment_type"] == "RECURRING_CARD" and shown["card"]["last_four"] == "0002"


# ---- config/rejection_codes.yaml ---------------------------------------------------------------------------


def test_shipped_rejection_codes_are_the_real_card_response_codes():
    config = load_rejection_codes(PROJECT_ROOT / "config")
    card = {c: r for c, r in config.codes.items() if r.reason_type == "CARD_DECLINE"}
    assert config.default_payment_type == "MANUAL"
    assert {c for c, r in card.items() if r.decline == "SOFT"} == {"05", "51", "61", "65", "91", "96"}
    assert {c for c, r in card.items() if r.decline == "HARD"} == {"04", "14", "41", "43", "54", "57", "62"}
    assert config.codes["51"].description == "Insufficient funds"
    assert all(r.refund_event for r in config.codes.values() if r.decline == "HARD")


def _mutated(tmp_path, mutate) -> ConfigError:
    document = yaml.safe_load((PROJECT_ROOT / "config" / "rejection_codes.yaml").read_text())
    mutate(document)
    (tmp_path / "rejection_codes.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        load_rejection_codes(tmp_path)
    return caught.value


def _set(index, field, value):
    def mutate(document):
        document["rejection_codes"][index][field] = value
    return mutate


def _drop(index, field):
    def mutate(document):
        del document["rejection_codes"][index][field]
    return mutate


@pytest.mark.parametrize(("mutate", "entry", "field", "fragment"), [
    (_set(0, "code", 5), "rejection_codes[0]", "code", "write code: '05'"),
    (_set(1, "code", "05"), "05", "code", "defined twice"),
    (_set(0, "code", "0-5"), "0-5", "code", "1-8 letters or digits"),
    (_set(0, "decline", "MAYBE"), "05", "decline", "SOFT or HARD"),
    (_set(0, "retries", 11), "05", "retries", "between 0 and 10"),
    (_set(0, "retries", "2"), "05", "retries", "must be an integer"),
    (_set(0, "suspension_days", -1), "05", "suspension_days", "between 0 and 90"),
    (_drop(0, "retry_event"), "05", "retry_event", "needs the workflow event"),
    (_drop(0, "cancellation_event"), "05", "cancellation_event", "retries run out"),
    (_set(6, "retries", 1), "04", "retries", "never retried"),
    (_set(0, "refund_event", {"type": "X", "code": "Y"}), "05", "refund_event", "only a hard decline"),
    (_set(0, "retry_event", {"type": "lower", "code": "Y"}), "05", "retry_event.type", "upper-case identifier"),
    (_set(0, "retry_event", {"code": "Y"}), "05", "retry_event", "exactly 'type' and 'code'"),
    (_set(0, "description", ""), "05", "description", "1-60 characters"),
    (_set(0, "reason_code", "not ok"), "05", "reason_code", "upper-case identifier"),
    (_set(0, "colour", "red"), "05", "colour", "unknown field"),
    (_drop(6, "refund_event"), "04", "refund_event", "needs the refund event"),
    (lambda d: d.update(default_payment_type="CASH"), "-", "default_payment_type", "must be one of"),
])
def test_invalid_rejection_codes_name_file_entry_and_field(tmp_path, mutate, entry, field, fragment):
    error = _mutated(tmp_path, mutate)
    assert (error.entry, error.field) == (entry, field)
    assert fragment in error.why and str(error).startswith(str(tmp_path / "rejection_codes.yaml"))


def test_card_rejections_feed_is_known_to_partner_config(tmp_path):
    shutil.copy(PROJECT_ROOT / "config" / "partners.yaml", tmp_path / "partners.yaml")
    assert "card_rejections" in load_partners(tmp_path)["CARDPAY"].feeds
