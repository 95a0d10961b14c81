"""Card hard declines with `default_payment_type: DIRECT_DEBIT` configured: an account with an active mandate
moves to direct debit, one without stays collectable by hand (MANUAL, saying why); the events, the outcome
report, the communications and the e-mails carry the code's reason type and code and the new payment type."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime

import orjson
import pytest

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.config import load_partners, load_rejection_codes
from cmp_pipelines.core.config_workflow import load_workflow_actions
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.core.templates import Templates
from cmp_pipelines.core.workflow import dispatch
from cmp_pipelines.defs.card_rejections.flow import CardRejections
from tests.support.direct_debit import BUREAU, DD_CONFIG, auddis_day
from tests.support.platform import NOW, rejection, rejections_document

DAY = date(2026, 12, 15)
PROCESSED = datetime(2026, 12, 16, 9, tzinfo=UTC)
WITH_MANDATE, WITHOUT_MANDATE, SOFT = "ACC00000001", "ACC00000002", "ACC00000003"


@pytest.fixture
def config(tmp_path):
    folder = tmp_path / "config-edited"
    shutil.copytree(PROJECT_ROOT / "config", folder)
    file = folder / "rejection_codes.yaml"
    file.write_text(file.read_text().replace("default_payment_type: MANUAL", "default_payment_type: DIRECT_DEBIT"))
    return folder


@pytest.fixture
def extracted(platform):
    """Three card-paying accounts; the first also holds an active Direct Debit mandate (lodged, quiet period over)."""
    from cmp_pipelines.core.mandates import create_mandate

    platform.keyring.init_keys(BUREAU)
    partners = load_partners(PROJECT_ROOT / "config")
    lodged = date(2026, 12, 1)
    with platform.connect() as con:
        create_mandate(con, WITH_MANDATE, config=DD_CONFIG, now=datetime(2026, 12, 1, 3, tzinfo=UTC),
                       reference="CMPCARD01", sort_code="201575", bank_account="87654321", account_name="Payer")
    auddis_day(platform, lodged)
    auddis_day(platform, date(2026, 12, 1 + DD_CONFIG.activation_days))
    assert platform.query("SELECT status FROM mandates") == [("ACTIVE",)]
    with platform.connect() as con:
        for account in (WITH_MANDATE, WITHOUT_MANDATE, SOFT):
            payment_setup.set_payment_type(con, account, "RECURRING_CARD", partners=partners, now=NOW, cause="test",
                                           card_token=f"tok_{account}", last_four="1111", expiry="2099-12")
        con.execute("UPDATE accounts SET email = lower(account_number) || '@example.com'")
    due = platform.card_day(DAY)
    return {a: (t, m) for t, a, m in platform.query(
        "SELECT transaction_id, account_number, minor_to_decimal(amount_minor) FROM card_transactions "
        "WHERE batch_id = ? AND kind = 'PAYMENT' ORDER BY 1", [due.batch_id])}


def test_hard_decline_moves_to_the_direct_debit_default_where_a_mandate_is_active(platform, config, extracted):
    records = [rejection(str(n), *extracted[account][:1], account, extracted[account][1], code)
               for n, (account, code) in enumerate(((WITH_MANDATE, "41"), (WITHOUT_MANDATE, "43"), (SOFT, "51")), 1)]
    key = platform.drop_rejections("REJ-DEFAULT.json.enc", rejections_document(records))
    with platform.connect() as con:
        flow = CardRejections(con, platform.files, platform.keyring, load_partners(config),
                              load_rejection_codes(config), PROCESSED)
        load = flow.load(key)
        flow.apply(load)
        report, _ = flow.write_reports(load)
    assert load.outcomes == {"HARD_DECLINE": 2, "RETRY_SCHEDULED": 1}
    assert dict(platform.query("SELECT account_number, payment_type FROM accounts WHERE account_number IN (?, ?, ?)",
                               [WITH_MANDATE, WITHOUT_MANDATE, SOFT])) == {
        WITH_MANDATE: "DIRECT_DEBIT", WITHOUT_MANDATE: "MANUAL", SOFT: "RECURRING_CARD"}
    assert platform.query("SELECT account_number, old_type, new_type, cause FROM payment_type_changes "
                          "WHERE cause LIKE 'card decline%' ORDER BY 1") == [
        (WITH_MANDATE, "RECURRING_CARD", "DIRECT_DEBIT", f"card decline 41 on {extracted[WITH_MANDATE][0]}"),
        (WITHOUT_MANDATE, "RECURRING_CARD", "MANUAL", f"card decline 43 on {extracted[WITHOUT_MANDATE][0]}; not "
         "DIRECT_DEBIT: the default DIRECT_DEBIT needs an active mandate; the account has none")]
    assert platform.query("SELECT account_number, event_code, reason_type, reason_code, new_payment_type "
                          "FROM workflow_events WHERE event_type = 'RECURRING_PAYMENT' ORDER BY 1") == [
        (WITH_MANDATE, "CARD_HARD_DECLINE_REFUND", "CARD_DECLINE", "LOST_CARD", "DIRECT_DEBIT"),
        (WITHOUT_MANDATE, "CARD_HARD_DECLINE_REFUND", "CARD_DECLINE", "STOLEN_CARD", "MANUAL"),
        (SOFT, "CARD_SOFT_DECLINE", "CARD_DECLINE", "INSUFFICIENT_FUNDS", None)]
    records = {r["account_number"]: r for r in orjson.loads(platform.files.read_bytes(report))["records"]}
    assert {a: (r["reason_code"], r["reason_type"], r["reason"], r["new_payment_type"], r["payment_type_note"])
            for a, r in records.items()} == {
        WITH_MANDATE: ("41", "CARD_DECLINE", "LOST_CARD", "DIRECT_DEBIT", None),
        WITHOUT_MANDATE: ("43", "CARD_DECLINE", "STOLEN_CARD", "MANUAL",
                          "the default DIRECT_DEBIT needs an active mandate; the account has none"),
        SOFT: ("51", "CARD_DECLINE", "INSUFFICIENT_FUNDS", None, None)}
    bodies = dict(platform.query("SELECT account_number, body FROM customer_communications"))
    assert bodies[WITH_MANDATE].endswith("now pays by direct debit payment: the amount will be collected that way.")
    assert bodies[WITHOUT_MANDATE].endswith("now pays by manual payment: please pay the invoice another way.")
    with platform.connect() as con:
        dispatch(con, load_workflow_actions(config), Templates(config / "templates"), PROCESSED)
        mails = dict(con.execute("SELECT account_number, body_text FROM email_outbox WHERE kind = 'COMMUNICATION' "
                                 "AND account_number IN (?, ?)", [WITH_MANDATE, WITHOUT_MANDATE]).fetchall())
    assert "your account now pays by Direct Debit" in mails[WITH_MANDATE]
    assert "set to pay manually" not in mails[WITH_MANDATE]
    assert "your account is now set to pay manually" in mails[WITHOUT_MANDATE]


def test_card_default_after_a_card_decline_is_manual(platform, config, extracted):
    """The card that just failed hard is not asked again: a RECURRING_CARD default gives MANUAL here."""
    file = config / "rejection_codes.yaml"
    file.write_text(file.read_text().replace("default_payment_type: DIRECT_DEBIT",
                                             "default_payment_type: RECURRING_CARD"))
    transaction, amount = extracted[WITHOUT_MANDATE]
    key = platform.drop_rejections("REJ-SAME.json.enc", rejections_document(
        [rejection("1", transaction, WITHOUT_MANDATE, amount, "54")]))
    with platform.connect() as con:
        flow = CardRejections(con, platform.files, platform.keyring, load_partners(config),
                              load_rejection_codes(config), PROCESSED)
        flow.apply(flow.load(key))
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = ?", [WITHOUT_MANDATE]) == [
        ("MANUAL",)]
    assert platform.query("SELECT detail FROM workflow_events WHERE event_code = 'CARD_HARD_DECLINE_REFUND'")[0][0] \
        .endswith(", account now pays by MANUAL (not RECURRING_CARD: the default RECURRING_CARD is the payment type "
                  "that just failed)")
