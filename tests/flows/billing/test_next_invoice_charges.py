"""Hardware orders billed "on the next invoice" (seed: hardware-orders): pending, shown on the account, until the
billing feed's next invoice for the account takes them, exactly once."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cmp_pipelines.cli import main
from tests.support.billing import billing_document, invoice
from tests.support.hardware import shipped

ACCOUNT = "ACC00000020"


def _pending_orders(hardware) -> tuple[str, str, str]:
    """Two next-invoice orders (3 x 19.99 and 60.00) and one billed immediately (19.99), all dispatched."""
    first = hardware.order(ACCOUNT, [("PR-CASE-X1", 3)], billing="NEXT_INVOICE")
    second = hardware.order(ACCOUNT, [("LC-MDM-12M", 1)], billing="NEXT_INVOICE")
    now = hardware.order(ACCOUNT, [("PR-CASE-X1", 1)])
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [
        *(shipped(first, 1, "PR-CASE-X1", f"C-{i}") for i in range(3)), shipped(second, 1, "LC-MDM-12M", "L-1"),
        shipped(now, 1, "PR-CASE-X1", "C-9")]))
    return first, second, now


def show(*args: str):
    return CliRunner().invoke(main, ["accounts", "show", ACCOUNT, *args], catch_exceptions=False)


def test_pending_charges_show_on_the_account_then_go_on_its_next_invoice_once(hardware, billing):
    first, second, now = _pending_orders(hardware)
    view = json.loads(show("--json").output)
    assert [(c["order_id"], c["amount"], c["currency"]) for c in view["pending_charges"]] == [
        (first, "59.97", "GBP"), (second, "60.00", "GBP")]
    text = show().output
    assert f"pending on the next invoice: Hardware order {first}  59.97 GBP" in text
    assert f"pending on the next invoice: Hardware order {second}  60.00 GBP" in text
    assert hardware.hardware_charges(ACCOUNT) == 1999, "only the immediate order is charged so far"
    balance = billing.ledger(ACCOUNT)

    # the account's next invoice is the earliest this run issues to it (12-01), whatever the file order
    load = billing.process(billing.drop("run1.json.enc", billing_document([
        invoice("1", ACCOUNT, "INV-HW-LATER", "30.00", "2026-12-05"),
        invoice("2", ACCOUNT, "INV-HW-NEXT", "25.00", "2026-12-01"),
        invoice("3", "ACC00000019", "INV-HW-OTHER", "5.00", "2026-12-01"),
    ])))

    assert hardware.platform.query(
        "SELECT order_id, invoice_number FROM hw_pending_charges ORDER BY order_id") == sorted(
        [(first, "INV-HW-NEXT"), (second, "INV-HW-NEXT")])
    charged = hardware.platform.query(
        "SELECT idempotency_key, invoice_number, amount_minor, batch_id FROM ledger_postings "
        "WHERE kind = 'HARDWARE_CHARGE' AND invoice_number IS NOT NULL ORDER BY idempotency_key")
    assert [c[:3] for c in charged] == sorted([(f"hw:{first}:CHARGE", "INV-HW-NEXT", 5997),
                                               (f"hw:{second}:CHARGE", "INV-HW-NEXT", 6000)])
    assert {c[3] for c in charged} == {"BLP-" + load.batch_id.removeprefix("BLL-")}
    assert hardware.hardware_charges(ACCOUNT) == 1999 + 11997
    assert billing.ledger(ACCOUNT) == balance + 3000 + 2500 + 11997
    assert billing.ledger("ACC00000019", "HARDWARE_CHARGE") == 0

    view = json.loads(show("--json").output)
    assert view["pending_charges"] == [] and "pending on the next invoice" not in show().output
    outstanding = {i["invoice_number"]: i["outstanding"] for i in view["open_invoices"]}
    assert outstanding["INV-HW-NEXT"] == "144.97", "25.00 invoiced by the billing system + 119.97 of hardware"
    assert outstanding["INV-HW-LATER"] == "30.00"
    assert hardware.view(first)["billed"] == [{"kind": "INVOICED INV-HW-NEXT", "amount": "59.97"}]
    assert hardware.view(now)["billed"] == [{"kind": "LEDGER_CHARGE", "amount": "19.99"}]
    ack = {r["record_id"]: r for r in billing.read_ack("run1")["records"]}
    assert (ack["2"]["hardware_charges"], ack["2"]["hardware_orders"]) == ("119.97", sorted([first, second]))
    assert (ack["1"]["hardware_charges"], ack["1"]["hardware_orders"]) == ("0.00", None)
    posting_file = json.loads(hardware.platform.files.read_bytes(f"outbound/ledger/{charged[0][3]}.json"))
    assert posting_file["header"]["total_amount"] == "179.97" and posting_file["header"]["record_count"] == 5

    # the next billing run invoices the account again: the charges are not taken twice
    billing.process(billing.drop("run2.json.enc", billing_document(
        [invoice("1", ACCOUNT, "INV-HW-JAN", "25.00", "2027-01-01")], file_id="BILLSYS-20270101-001")))
    assert hardware.hardware_charges(ACCOUNT) == 1999 + 11997
    assert billing.ledger(ACCOUNT) == balance + 3000 + 2500 + 11997 + 2500


def test_a_charge_dispatched_after_a_run_waits_for_the_following_run(hardware, billing):
    billing.process(billing.drop("run1.json.enc", billing_document([invoice("1", ACCOUNT, "INV-A", "1.00")])))
    late = hardware.order(ACCOUNT, [("LC-MDM-12M", 1)], billing="NEXT_INVOICE")
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "late.csv.enc", [shipped(late, 1, "LC-MDM-12M", "L-2")]))
    assert [c["order_id"] for c in json.loads(show("--json").output)["pending_charges"]] == [late]
    billing.process(billing.drop("run2.json.enc", billing_document(
        [invoice("1", "ACC00000019", "INV-B", "1.00")], file_id="BILLSYS-2")))
    assert hardware.view(late)["billed"] == [{"kind": "PENDING_CHARGE", "amount": "60.00"}], \
        "a run that does not invoice the account leaves its charges pending"
    billing.process(billing.drop("run3.json.enc", billing_document(
        [invoice("1", ACCOUNT, "INV-C", "1.00")], file_id="BILLSYS-3")))
    assert hardware.view(late)["billed"] == [{"kind": "INVOICED INV-C", "amount": "60.00"}]
    assert hardware.hardware_charges(ACCOUNT) == 6000


def test_a_rejected_invoice_takes_no_charge(hardware, billing):
    first, second, _ = _pending_orders(hardware)
    billing.process(billing.drop("run.json.enc", billing_document([invoice("1", ACCOUNT, "INV-BAD", "1.001")])))
    assert len(json.loads(show("--json").output)["pending_charges"]) == 2
    assert hardware.hardware_charges(ACCOUNT) == 1999


def test_the_posting_step_killed_before_its_commit_and_run_again_charges_once(hardware, billing, monkeypatch):
    """A failure inside the posting transaction (after the charges were attached and posted, before the batch
    row) rolls all of it back; the step run again attaches and posts each charge once."""
    from cmp_pipelines.defs.billing import flow as billing_flow

    first, second, _ = _pending_orders(hardware)
    key = billing.drop("run.json.enc", billing_document([invoice("1", ACCOUNT, "INV-K", "10.00")]))

    def killed(*args, **kwargs):
        raise RuntimeError("killed before the posting batch was recorded")

    with billing.platform.connect() as con:
        flow = billing.flow(con)
        load = flow.load(key)
        with monkeypatch.context() as patched:
            patched.setattr(billing_flow, "record_posting_batch", killed)
            try:
                flow.post(load)
            except RuntimeError:
                pass
            else:
                raise AssertionError("the posting step was not interrupted")
    assert hardware.platform.query("SELECT count(*) FROM hw_pending_charges WHERE invoice_number IS NOT NULL") == [
        (0,)]
    assert hardware.hardware_charges(ACCOUNT) == 1999
    billing.process(key)
    billing.process(key)
    assert hardware.hardware_charges(ACCOUNT) == 1999 + 11997
    assert billing.ledger(ACCOUNT, "INVOICE") - 0 == billing.platform.query(
        "SELECT sum(amount_minor) FROM invoices WHERE account_number = ?", [ACCOUNT])[0][0]
