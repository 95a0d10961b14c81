"""A billing run killed (kill -9) at every point where its work becomes durable, then recovered by the next
run-pending: the invoices and the next-invoice hardware charge are posted exactly once, as in an uninterrupted run.
Uses the crash sweep of tests/support/crash.py (forked runs, CMP_CRASHPOINT)."""

from __future__ import annotations

import pytest

from tests.support import crash
from tests.support.billing import billing_document, invoice
from tests.support.crash import crash_everywhere, execute, shards
from tests.support.hardware import shipped

home, tmp_path = crash.home, crash.tmp_path  # the sweep's fixtures: the platform with dagster.yaml, on /dev/shm

ACCOUNT = "ACC00000020"


@pytest.mark.slow
@shards
def test_a_billing_run_killed_anywhere_invoices_each_charge_once(home, hardware, billing, shard):
    order = hardware.order(ACCOUNT, [("LC-MDM-12M", 1)], billing="NEXT_INVOICE")
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [shipped(order, 1, "LC-MDM-12M", "L-1")]))
    before = billing.ledger(ACCOUNT)

    def prepare():
        billing.drop("crash.json.enc", billing_document([invoice("1", ACCOUNT, "INV-CRASH-1", "25.00"),
                                                         invoice("2", "ACC00000019", "INV-CRASH-2", "5.00")]))

    def finish():  # a later run invoices the account again: the charge is not taken twice
        billing.drop("after.json.enc", billing_document([invoice("1", ACCOUNT, "INV-CRASH-3", "1.00")],
                                                        file_id="BILLSYS-AFTER"))
        assert execute() == 0
        assert hardware.hardware_charges(ACCOUNT) == 6000
        assert billing.ledger(ACCOUNT) == before + 2500 + 6000 + 100

    killed_at, expected = crash_everywhere(billing.platform, prepare, lambda n: execute(n), finish, shard)
    assert expected["postings"] == [("HARDWARE_CHARGE", 1, 6000)]
    assert "outbound/crash.ack.json.enc" in expected["files"]
    assert any("acknowledgements/billing" in k for k in killed_at), killed_at
    assert len(killed_at) >= 6, killed_at
    assert billing.platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings "
                                  "WHERE invoice_number LIKE 'INV-CRASH-%' AND kind = 'INVOICE'") == [(3, 3100)]
