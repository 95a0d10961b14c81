"""ARUDD returns through the rejections engine shared with card declines (core/rejections.py): a return before
its debit is posted waits and changes nothing (the same "already posted" check as card reversals, by ledger key);
once posted it is reversed once, in a reversal batch tied to the report's batch by the parent relation."""

from __future__ import annotations

from datetime import date

import pytest

from cmp_pipelines.core.config import load_rejection_codes
from cmp_pipelines.core.ledger import is_posted, parent_batch_id
from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections
from cmp_pipelines.defs.direct_debit.returns import DirectDebitReturns
from tests.support.direct_debit import (
    BUREAU,
    CONFIG_DIR,
    DD_CONFIG,
    PARTNERS,
    active_dd_accounts,
    add_invoice,
    arudd,
    at,
    drop_report,
    returned,
)
from tests.support.notices import give_notices

D0 = date(2026, 12, 1)
DAY = date(2026, 12, 17)
DEBIT = "DD20261217-CMPDD0001"


@pytest.fixture
def dd(platform):
    platform.keyring.init_keys(BUREAU)
    add_invoice(platform, "ACCDD0001", "INVDD0001", 4567, date(2026, 12, 5), date(2026, 12, 19))
    add_invoice(platform, "ACCDD0001", "INVDD0004", 1234, date(2026, 12, 2), date(2026, 12, 12))
    active_dd_accounts(platform, {"ACCDD0001": "CMPDD0001"}, D0)
    return platform


def returns_flow(con, dd, day: date) -> DirectDebitReturns:
    return DirectDebitReturns(con, dd.files, dd.keyring, PARTNERS, load_rejection_codes(CONFIG_DIR), DD_CONFIG,
                              now=at(day, 6))


def test_a_return_waits_for_its_posting_then_reverses_it_once(dd):
    give_notices(dd, "DIRECT_DEBIT", DAY)
    with dd.connect() as con:
        collections = DirectDebitCollections(con, dd.files, dd.keyring, DD_CONFIG, at(DAY, 2))
        batch = collections.select(DAY)
        collections.write_file(batch)  # extracted, not yet posted
    key = drop_report(dd, "arudd", "ARUDD-009.xml", arudd([returned("CMPDD0001", "1012", date(2026, 12, 18),
                                                                     "58.01", trans="01")]))
    with dd.connect() as con:
        flow = returns_flow(con, dd, date(2026, 12, 21))
        load = flow.load(key)
        assert load.outcomes == {"HARD_DECLINE": 1}
        with pytest.raises(LookupError) as refused:
            flow.apply(load)
        assert str(refused.value) == (f"debit {DEBIT} is not posted to the ledger yet: materialise "
                                      "dd_collection_posting_batch for 2026-12-17 first, then re-run this report")
        assert con.execute("SELECT status FROM batches WHERE batch_id = ?", [load.batch_id]).fetchone() == ("LOADED",)
        assert con.execute("SELECT status FROM dd_collections WHERE collection_id = ?", [DEBIT]).fetchone() == (
            "EXTRACTED",)
        assert con.execute("SELECT count(*) FROM ledger_postings WHERE kind = 'DD_REVERSAL'").fetchone() == (0,)

        posted = DirectDebitCollections(con, dd.files, dd.keyring, DD_CONFIG, at(DAY, 2)).post(batch)
        assert (posted.posting_count, posted.total_minor) == (2, -5801)
        assert is_posted(con, "dd", DEBIT, "INVDD0001", "COLLECTION")
        reversal = flow.apply(load)
        assert (reversal.batch_id, reversal.posted_now, reversal.total_minor) == (
            load.batch_id.replace("ARJ-", "ARV-"), 2, 5801)
        assert parent_batch_id(con, reversal.batch_id) == load.batch_id
        assert con.execute(
            "SELECT idempotency_key, invoice_number, amount_minor, source_ref FROM ledger_postings "
            "WHERE batch_id = ? ORDER BY posting_id", [reversal.batch_id]).fetchall() == [
            (f"dd:{DEBIT}:INVDD0001:REVERSAL", "INVDD0001", 4567, DEBIT),
            (f"dd:{DEBIT}:INVDD0004:REVERSAL", "INVDD0004", 1234, DEBIT)]
        again = flow.apply(flow.loaded(key))
        assert (again.batch_id, again.posting_count, again.total_minor) == (reversal.batch_id, 2, 5801)
        totals = con.execute("SELECT kind, count(*), sum(amount_minor) FROM ledger_postings "
                             "WHERE account_number = 'ACCDD0001' GROUP BY 1 ORDER BY 1").fetchall()
    assert totals == [("DD_COLLECTION", 2, -5801), ("DD_REVERSAL", 2, 5801), ("INVOICE", 2, 5801)]
