"""`cmp-pipelines accounts payments ACC` over an account that paid every way through the real flows: the table an
operator reads, the JSON with paging, the filters, and clear errors for a bad filter or an unknown account."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cmp_pipelines.cli import main
from tests.support.history import ACCOUNT, every_kind_of_payment


def cli(*args):
    return CliRunner().invoke(main, list(args))


def test_the_payments_screen_lists_every_flow_with_status_and_reason(platform):
    every_kind_of_payment(platform)
    result = cli("accounts", "payments", ACCOUNT, "--limit", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["DATE", "SOURCE", "METHOD", "KIND", "AMOUNT", "STATUS", "REASON", "INVOICE",
                                "REFERENCE"]
    assert lines[1].split() == ["2027-01-05", "CARD", "RECURRING_CARD", "REFUND", "2.25", "APPROVED", "(overcharge)",
                                "RFACCHIST01-002"]
    assert lines[2].split() == ["2026-12-21", "DIRECT_DEBIT", "DIRECT_DEBIT", "RETURN", "120.00", "RETRY_SCHEDULED",
                                "ARUDD0", "(Refer", "to", "payer)", "DD_RETURN/REFER_TO_PAYER",
                                "DD20261217-CMPHIST01"]
    assert lines[4].split() == ["2026-11-26", "CARD", "RECURRING_CARD", "REVERSAL", "80.00", "HARD_DECLINE", "04",
                                "(Pick", "up", "card)", "CARD_DECLINE/PICK_UP_CARD", "INVH0001", "PINVH0001-1"]
    assert lines[-1] == f"{ACCOUNT}: 1-4 of 8 payment(s); next page: --offset 4"


def test_json_pages_and_filters_as_the_api_does(platform):
    every_kind_of_payment(platform)
    second = json.loads(cli("accounts", "payments", ACCOUNT, "--json", "--limit", "4", "--offset", "4").output)
    assert (second["total"], second["offset"], second["next_offset"]) == (8, 4, None)
    assert [(p["kind"], p["amount"], p["status"]) for p in second["payments"]] == [
        ("REFUND", "7.50", "EXTRACTED"), ("PAYMENT", "80.00", "HARD_DECLINED"), ("PAYMENT", None, "REJECTED"),
        ("PAYMENT", "20.00", "ACCEPTED")]
    cash = json.loads(cli("accounts", "payments", ACCOUNT, "--json", "--method", "CASH").output)
    assert [(p["method"], p["amount"], p["invoice_number"]) for p in cash["payments"]] == \
        [("CASH", "20.00", "INVH0001")]
    window = json.loads(cli("accounts", "payments", ACCOUNT, "--json", "--from", "2026-12-01", "--to", "2026-12-31",
                            "--status", "RETRY_SCHEDULED").output)
    assert [(p["date"], p["kind"]) for p in window["payments"]] == [("2026-12-21", "RETURN")]


def test_a_bad_filter_or_an_unknown_account_is_a_clear_error(platform):
    every_kind_of_payment(platform)
    bad = cli("accounts", "payments", ACCOUNT, "--kind", "GIFT")
    assert bad.exit_code == 1
    assert "Error: --kind: 'GIFT' is not a kind; use one of PAYMENT, REFUND, REVERSAL, RETURN" in bad.output
    day = cli("accounts", "payments", ACCOUNT, "--from", "yesterday")
    assert day.exit_code == 1 and "Error: --from 'yesterday' is not a date (YYYY-MM-DD)" in day.output
    missing = cli("accounts", "payments", "ACC09999999")
    assert missing.exit_code == 1 and "Error: account ACC09999999 not found" in missing.output
