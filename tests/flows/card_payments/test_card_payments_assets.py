"""The CARD-mode selection asset materialised on its own for one day with the real resources: the day's batch
and the metadata an operator reads in the UI, to the penny."""

from __future__ import annotations

import dagster as dg

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.card_payments.assets import card_payments_due
from tests.support.dagster import real_resources
from tests.support.notices import give_notices
from tests.support.platform import NOW


def test_the_due_asset_selects_the_days_card_payments_and_reports_their_total(platform, instance):
    day = NOW.date()
    with platform.connect() as con:
        payment_setup.set_payment_type(con, "ACC00000004", "RECURRING_CARD",
                                       partners=load_partners(PROJECT_ROOT / "config"), now=NOW, cause="test",
                                       card_token="tok_assets_4", last_four="0004", expiry="2031-01")
        con.execute("UPDATE invoices SET due_on = ? WHERE account_number = 'ACC00000004'", [day])
    [(invoices, owed)] = platform.query(
        "SELECT count(*), sum(amount_minor) FROM invoices WHERE account_number = 'ACC00000004'")

    give_notices(platform, "RECURRING_CARD", day)  # sent when the invoices were issued, weeks ago
    result = dg.materialize([card_payments_due], partition_key=day.isoformat(), instance=instance,
                            resources=real_resources(platform))

    assert result.success
    [materialization] = result.asset_materializations_for_node("card_payments_due")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert owed > 0 and (meta["record_count"], meta["payment_count"], meta["refund_count"]) == (invoices, invoices, 0)
    assert meta["payment_amount"] == format_minor(owed) and meta["refund_amount"] == "0.00"
    assert meta["business_date"] == day.isoformat() and meta["retries"] == 0
    assert platform.query("SELECT count(*), sum(amount_minor) FROM card_transactions WHERE batch_id = ?",
                          [meta["batch_id"]]) == [(invoices, owed)]
    assert platform.query("SELECT count(*) FROM ledger_postings WHERE kind = 'CARD_PAYMENT'") == [(0,)], \
        "selection posts nothing: that is card_payment_posting_batch"
    assert not platform.files.list_files("outbound/card_payments"), "nor does it publish the extract"
