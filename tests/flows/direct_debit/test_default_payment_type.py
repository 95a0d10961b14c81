"""A configured default payment type other than MANUAL (payments-business-configuration seed: "A hard decline
results in CMP automatically changing the customer's Payment Type to the configured default"), as an operator
sets it: edit config/rejection_codes.yaml, `config validate`, then the ARUDD returns and ADDACS cancellations.
The account moves to the default only where it can pay that way, else to MANUAL with the reason."""

from __future__ import annotations

import shutil
from datetime import date

import orjson
import pytest
import yaml
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.config import load_mandate_revision_codes, load_rejection_codes
from cmp_pipelines.core.config_workflow import load_workflow_actions
from cmp_pipelines.core.payment_setup import register_card
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.core.templates import Templates
from cmp_pipelines.core.workflow import dispatch
from cmp_pipelines.defs.direct_debit.addacs import AddacsReports
from cmp_pipelines.defs.direct_debit.returns import DirectDebitReturns
from tests.support.direct_debit import (
    BUREAU,
    DD_CONFIG,
    PARTNERS,
    active_dd_accounts,
    add_invoice,
    addacs,
    arudd,
    at,
    collection_day,
    drop_report,
    returned,
)

D0 = date(2026, 12, 1)
CARD_ON_FILE, NO_CARD, EXPIRED_CARD = "ACCDD0001", "ACCDD0002", "ACCDD0003"


def cli(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def config(tmp_path, monkeypatch):
    """The shipped configuration with `default_payment_type: RECURRING_CARD`, as an operator would edit it."""
    folder = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", folder)
    file = folder / "rejection_codes.yaml"
    file.write_text(file.read_text().replace("default_payment_type: MANUAL", "default_payment_type: RECURRING_CARD"))
    monkeypatch.setenv("CMP_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def dd(platform, config):
    platform.keyring.init_keys(BUREAU)
    references = {}
    for n, account in enumerate((CARD_ON_FILE, NO_CARD, EXPIRED_CARD), start=1):
        add_invoice(platform, account, f"INVDD000{n}", 1000 * n + 1, date(2026, 12, 5), date(2026, 12, 19))
        references[account] = f"CMPDD000{n}"
    active_dd_accounts(platform, references, D0)
    with platform.connect() as con:
        con.execute("UPDATE accounts SET email = lower(account_number) || '@example.com' "
                    "WHERE account_number LIKE 'ACCDD%'")
        register_card(con, CARD_ON_FILE, "tok_card_dd1", partners=PARTNERS, now=at(D0), last_four="4242",
                      expiry="2099-12")
        # registered long ago: expired in November 2026, before the returns are processed
        con.execute("INSERT INTO payment_cards VALUES (?, 'CARDPAY', 'tok_old', '0005', '11/26', ?)",
                    [EXPIRED_CARD, at(date(2024, 1, 1))])
    return platform


def process_arudd(platform, config, key: str, day: date):
    with platform.connect() as con:
        flow = DirectDebitReturns(con, platform.files, platform.keyring, PARTNERS, load_rejection_codes(config),
                                  DD_CONFIG, now=at(day, 6))
        load = flow.load(key)
        flow.apply(load)
        report, _ = flow.write_reports(flow.loaded(key))
    return load, orjson.loads(platform.files.read_bytes(report))


def test_config_validate_accepts_any_payment_type_and_refuses_an_unknown_one(config):
    result = cli("config", "validate")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load((config / "rejection_codes.yaml").read_text())
    document["default_payment_type"] = "CASH"
    (config / "rejection_codes.yaml").write_text(yaml.safe_dump(document))
    result = cli("config", "validate")
    assert result.exit_code != 0
    assert ("  rejection_codes.yaml: default_payment_type: must be one of MANUAL, RECURRING_CARD, DIRECT_DEBIT, "
            "got 'CASH'\n") in result.output


def test_hard_return_moves_to_the_card_default_only_with_a_usable_card(dd, config):
    collection_day(dd, date(2026, 12, 17))
    items = [returned(f"CMPDD000{n}", "1012", date(2026, 12, 18), f"{10 * n}.01", trans="01",
                      returnDescription="INSTRUCTION CANCELLED") for n in (1, 2, 3)]
    key = drop_report(dd, "arudd", "ARUDD-DEFAULT.xml", arudd(items))
    load, report = process_arudd(dd, config, key, date(2026, 12, 21))
    assert load.outcomes == {"HARD_DECLINE": 3}
    assert dict(dd.query("SELECT account_number, payment_type FROM accounts WHERE account_number LIKE 'ACCDD%'")) == {
        CARD_ON_FILE: "RECURRING_CARD", NO_CARD: "MANUAL", EXPIRED_CARD: "MANUAL"}
    # the history says why an account did not get the configured default
    changes = dict(dd.query("SELECT account_number, new_type || ' | ' || cause FROM payment_type_changes "
                            "WHERE cause LIKE 'direct debit returned%'"))
    assert changes[CARD_ON_FILE].startswith("RECURRING_CARD | ") and "not RECURRING_CARD" not in changes[CARD_ON_FILE]
    for account in (NO_CARD, EXPIRED_CARD):
        assert changes[account].startswith("MANUAL | ")
        assert changes[account].endswith("; not RECURRING_CARD: the default RECURRING_CARD needs a card on file "
                                         "that has not expired; the account has none")
    # the events carry the rejection code's reason type and code and the account's new payment type
    events = dd.query("SELECT account_number, event_code, reason_type, reason_code, new_payment_type "
                      "FROM workflow_events WHERE event_type = 'RECURRING_PAYMENT' ORDER BY account_number")
    assert events == [(CARD_ON_FILE, "DD_HARD_RETURN", "DD_RETURN", "INSTRUCTION_CANCELLED", "RECURRING_CARD"),
                      (NO_CARD, "DD_HARD_RETURN", "DD_RETURN", "INSTRUCTION_CANCELLED", "MANUAL"),
                      (EXPIRED_CARD, "DD_HARD_RETURN", "DD_RETURN", "INSTRUCTION_CANCELLED", "MANUAL")]
    # so does the bureau's outcome report
    by_account = {r["account_number"]: r for r in report["returns"]}
    assert {a: (r["reason_code"], r["reason_type"], r["reason"], r["new_payment_type"])
            for a, r in by_account.items()} == {
        CARD_ON_FILE: ("ARUDD1", "DD_RETURN", "INSTRUCTION_CANCELLED", "RECURRING_CARD"),
        NO_CARD: ("ARUDD1", "DD_RETURN", "INSTRUCTION_CANCELLED", "MANUAL"),
        EXPIRED_CARD: ("ARUDD1", "DD_RETURN", "INSTRUCTION_CANCELLED", "MANUAL")}
    assert by_account[CARD_ON_FILE]["payment_type_note"] is None
    assert "needs a card on file" in by_account[NO_CARD]["payment_type_note"]
    # the communications and the e-mails say what the account pays by now
    bodies = dict(dd.query("SELECT account_number, body FROM customer_communications"))
    assert bodies[CARD_ON_FILE].endswith("Your account now pays by recurring card payment: the amount will be "
                                         "collected that way.")
    assert bodies[NO_CARD].endswith("Your account now pays by manual payment: please pay the amount another way.")
    with dd.connect() as con:
        dispatch(con, load_workflow_actions(config), Templates(config / "templates"), at(date(2026, 12, 21), 7))
        mails = dict(con.execute("SELECT account_number, body_text FROM email_outbox "
                                 "WHERE kind = 'COMMUNICATION' AND subject NOT LIKE '%confirm%'").fetchall())
    assert "Your account now pays by card: we will take the amount still owed" in mails[CARD_ON_FILE]
    assert "Please pay it by another method" in mails[NO_CARD]
    assert "pays by card" not in mails[NO_CARD]
    # and the operator sees the reason in `events list` and `events show`
    listing = cli("events", "list", "--account", CARD_ON_FILE)
    assert listing.exit_code == 0, listing.output
    line = next(x for x in listing.output.splitlines() if "DD_HARD_RETURN" in x)
    assert "DD_RETURN/INSTRUCTION_CANCELLED" in line
    event_id = line.split()[0]
    shown = cli("events", "show", event_id)
    assert "reason type: DD_RETURN" in shown.output and "reason code: INSTRUCTION_CANCELLED" in shown.output
    assert "now pays by: RECURRING_CARD" in shown.output


def test_the_default_is_never_the_type_that_just_failed(dd, config):
    """Default DIRECT_DEBIT: a returned debit still leaves direct debit (MANUAL, saying why)."""
    file = config / "rejection_codes.yaml"
    file.write_text(file.read_text().replace("default_payment_type: RECURRING_CARD",
                                             "default_payment_type: DIRECT_DEBIT"))
    collection_day(dd, date(2026, 12, 17))
    key = drop_report(dd, "arudd", "ARUDD-SAME.xml", arudd([returned("CMPDD0001", "1012", date(2026, 12, 18),
                                                                     "10.01", trans="01")]))
    load, report = process_arudd(dd, config, key, date(2026, 12, 21))
    assert load.outcomes == {"HARD_DECLINE": 1}
    assert dd.query("SELECT payment_type FROM accounts WHERE account_number = ?", [CARD_ON_FILE]) == [("MANUAL",)]
    [record] = report["returns"]
    assert (record["new_payment_type"], record["payment_type_note"]) == (
        "MANUAL", "the default DIRECT_DEBIT is the payment type that just failed")
    assert dd.query("SELECT new_payment_type FROM workflow_events WHERE event_code = 'DD_HARD_RETURN'") == [
        ("MANUAL",)]


def test_addacs_cancellation_moves_to_the_card_default_and_reinstatement_back(dd, config):
    def run(name: str, reference: str, code: str, day: date):
        advice = {"reference": reference, "payer-name": "Payer", "payer-sort-code": "201575",
                  "payer-account-number": "87654321", "reason-code": code, "effective-date": day.isoformat()}
        key = drop_report(dd, "addacs", name, addacs([advice], number=f"00000{name[-1]}"))
        with dd.connect() as con:
            flow = AddacsReports(con, dd.files, dd.keyring, PARTNERS, load_mandate_revision_codes(config), DD_CONFIG,
                                 default_payment_type=load_rejection_codes(config).default_payment_type,
                                 now=at(day, 6))
            load = flow.apply(flow.load(key))
            return orjson.loads(dd.files.read_bytes(flow.write_report(load)))

    report = run("ADDACS-1", "CMPDD0001", "1", date(2026, 12, 20))
    [advice] = report["advices"]
    assert (advice["reason_code"], advice["reason_type"], advice["reason"]) == ("1", "ADDACS", "CANCELLED_BY_PAYER")
    assert dd.query("SELECT payment_type FROM accounts WHERE account_number = ?", [CARD_ON_FILE]) == [
        ("RECURRING_CARD",)]
    assert dd.query("SELECT reason_type, reason_code, new_payment_type FROM workflow_events "
                    "WHERE event_code = 'MANDATE_CANCELLED'") == [("ADDACS", "CANCELLED_BY_PAYER",
                                                                   "RECURRING_CARD")]
    run("ADDACS-2", "CMPDD0002", "1", date(2026, 12, 20))
    assert dd.query("SELECT payment_type FROM accounts WHERE account_number = ?", [NO_CARD]) == [("MANUAL",)]
    # the bank reinstates the first instruction: the account moved off direct debit by it goes back
    run("ADDACS-3", "CMPDD0001", "R", date(2026, 12, 22))
    assert dd.query("SELECT payment_type FROM accounts WHERE account_number = ?", [CARD_ON_FILE]) == [
        ("DIRECT_DEBIT",)]
