"""One account that has paid every way the platform knows, each through its real flow: NRP (one posted, one
rejected), recurring card (a payment hard-declined and reversed, a refund extracted, a refund approved for later),
direct debit (a collection, returned soft by ARUDD). One-off payments come through the API in the API tests."""

from __future__ import annotations

from datetime import UTC, date, datetime

from cmp_pipelines.core.payment_setup import approve_card_refund, set_payment_type
from tests.support.direct_debit import (
    BUREAU,
    PARTNERS,
    active_dd_accounts,
    add_invoice,
    arudd,
    collection_day,
    drop_report,
    process_arudd,
    returned,
)
from tests.support.platform import document, payment, rejection, rejections_document

ACCOUNT = "ACCHIST01"
CARD_DAY = date(2026, 11, 25)
DD_FROM = date(2026, 12, 1)


def every_kind_of_payment(platform) -> dict:
    """Builds the history; returns the ids the assertions need."""
    platform.keyring.init_keys(BUREAU)
    add_invoice(platform, ACCOUNT, "INVH0001", 10000, date(2026, 11, 1), date(2026, 11, 20))  # 100.00
    # NRP: 20.00 cash against the invoice is posted; a record with three decimals is rejected, naming the field
    key = platform.drop("PAYPOINT-20261121-HIST", document([
        payment("1", ACCOUNT, "20.00", "INVH0001", reference="PP 1"),
        payment("2", ACCOUNT, "5.001", payment_method="CHEQUE"),
    ], file_id="PAYPOINT-20261121-HIST"))
    load = platform.process(key)
    # Card: 80.00 outstanding extracted on the 25th with a 7.50 refund; the provider hard-declines the payment
    with platform.connect() as con:
        now = datetime(2026, 11, 24, 9, tzinfo=UTC)
        set_payment_type(con, ACCOUNT, "RECURRING_CARD", partners=PARTNERS, now=now, cause="test",
                         card_token="tok_history_1", last_four="4242", expiry="2031-01")
        refund_now = approve_card_refund(con, ACCOUNT, "7.50", now=now, due_on=CARD_DAY, reason="goodwill")
        refund_later = approve_card_refund(con, ACCOUNT, "2.25", now=now, due_on=date(2027, 1, 5),
                                           reason="overcharge")
    platform.card_day(CARD_DAY)
    rej = platform.drop_rejections("CARDPAY-REJ-HIST", rejections_document(
        [rejection("1", "PINVH0001-1", ACCOUNT, "80.00", "04", rejected_at="2026-11-26T08:00:00Z")],
        file_id="CARDPAY-REJ-HIST"))
    rejections, _ = platform.process_rejections(rej)
    # Direct debit: a mandate, a 40.00 invoice; the collection on the 17th takes it with the 80.00 still owed;
    # ARUDD returns it soft (refer to payer) on the 21st
    add_invoice(platform, ACCOUNT, "INVH0002", 4000, date(2026, 12, 5), date(2026, 12, 19))
    active_dd_accounts(platform, {ACCOUNT: "CMPHIST01"}, DD_FROM)
    batch, _, _ = collection_day(platform, date(2026, 12, 17))
    report = drop_report(platform, "arudd", "ARUDD-HIST.xml",
                         arudd([returned("CMPHIST01", "0128", date(2026, 12, 18), "120.00", trans="01")]))
    returns, _, _ = process_arudd(platform, report, date(2026, 12, 21))
    return {"nrp_batch": load.batch_id, "refund_now": refund_now, "refund_later": refund_later,
            "card_rejections": rejections.batch_id, "dd_batch": batch.batch_id, "dd_returns": returns.batch_id}
