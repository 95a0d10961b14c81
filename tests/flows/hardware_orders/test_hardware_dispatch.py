"""Sales Order Dispatch: an order's whole life for each billing choice, partial dispatch, a warehouse CSV with bad
rows (each with its specific outcome), bad files quarantined, and duplicate response files that post nothing
twice. Every charge is asserted to the penny."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from cmp_pipelines.core.files.schemas import first_error
from cmp_pipelines.core.intake import FileQuarantined
from tests.support.hardware import failed, imei, shipped


@pytest.fixture
def hardware(any_hardware):
    """Every test of this module on both stores (the PostgreSQL one under the `postgres` marker)."""
    return any_hardware


def _life(hardware, billing: str):
    account = "ACC00000011" if billing == "IMMEDIATE" else "ACC00000012"
    balance_before = hardware.platform.balance(account)
    order_id = hardware.order(account, [("HS-ACME-X1", 2), ("PR-CASE-X1", 1)], billing=billing, enrolment=True)
    batch = hardware.request()
    key = hardware.drop_dispatch("WH_NORTH", "north-0001.csv.enc", [
        shipped(order_id, 1, "HS-ACME-X1", imei(1)),
        shipped(order_id, 1, "HS-ACME-X1", imei(2)),
        shipped(order_id, 2, "PR-CASE-X1", "CASE-SN-1"),
    ])
    load, result = hardware.dispatch(key)
    return account, balance_before, order_id, batch, load, result


def test_whole_life_billed_immediately_to_the_ledger(hardware):
    account, before, order_id, batch, load, result = _life(hardware, "IMMEDIATE")

    view = hardware.view(order_id)
    assert view["status"] == "COMPLETE" and view["completed_at"]
    assert [(h["from"], h["to"]) for h in view["history"]] == [
        (None, "NEW"), ("NEW", "AWAITING_GENERATION"), ("AWAITING_GENERATION", "AWAITING_DISPATCH"),
        ("AWAITING_DISPATCH", "COMPLETE")]
    assert view["history"][-1]["cause"] == f"dispatched in full by WH_NORTH ({load.batch_id})"
    assert view["billed"] == [{"kind": "LEDGER_CHARGE", "amount": "1017.99"}]
    assert hardware.platform.balance(account) - before == 101799
    assert hardware.pending(account) == []
    assert (result.orders_completed, result.devices, result.ledger_charges, result.ledger_minor) == (1, 3, 1, 101799)
    posting = orjson.loads(hardware.platform.files.read_bytes(f"outbound/ledger/{result.batch_id}.json"))
    assert first_error("ledger_posting_batch", posting) is None
    assert posting["header"]["total_amount"] == "1017.99"
    assert [(p["idempotency_key"], p["kind"], p["amount"]) for p in posting["postings"]] == [
        (f"hw:{order_id}:CHARGE", "HARDWARE_CHARGE", "1017.99")]
    devices = hardware.platform.query(
        "SELECT device_id, imei, serial_number, manufacturer, enrolment_status, courier_reference, "
        "dispatched_at FROM hw_devices ORDER BY device_id")
    at = datetime(2026, 11, 21, 14, 5, tzinfo=UTC)
    assert devices == [
        (imei(1), imei(1), None, "ACME_MOBILE", "ENROL_PENDING", "DPD-100", at),
        (imei(2), imei(2), None, "ACME_MOBILE", "ENROL_PENDING", "DPD-100", at),
        ("CASE-SN-1", None, "CASE-SN-1", None, "NOT_REQUESTED", "DPD-100", at)]
    converted = orjson.loads(hardware.platform.files.read_bytes(
        "converted/warehouse_dispatch/WH_NORTH/north-0001.csv.json"))
    assert first_error("warehouse_dispatch_batch", converted) is None
    assert converted["header"]["record_count"] == converted["header"]["dispatched_count"] == 3
    assert converted["dispatches"][0]["status"] == "DISPATCHED"
    assert converted["dispatches"][0]["dispatched_at"] == "2026-11-21T14:05:00Z"
    [archived] = hardware.platform.files.list_files("archive/warehouse_dispatch/WH_NORTH")
    assert archived.path.endswith("/north-0001.csv.enc")
    assert not hardware.platform.files.list_files("inbound/warehouse_dispatch")


def test_whole_life_billed_on_the_next_invoice(hardware):
    account, before, order_id, _, _, result = _life(hardware, "NEXT_INVOICE")

    assert hardware.status(order_id) == "COMPLETE"
    assert hardware.pending(account) == [(order_id, 101799)]
    assert hardware.platform.balance(account) == before  # nothing on the ledger until the invoice
    assert hardware.hardware_charges(account) == 0
    assert hardware.view(order_id)["billed"] == [{"kind": "PENDING_CHARGE", "amount": "1017.99"}]
    assert (result.ledger_charges, result.pending_charges, result.pending_minor) == (0, 1, 101799)
    assert not hardware.platform.files.exists(f"outbound/ledger/{result.batch_id}.json")


def test_partial_dispatch_waits_for_the_rest_and_bills_once(hardware):
    account = "ACC00000013"
    order_id = hardware.order(account, [("HS-ACME-X1", 2), ("PR-CHARGER-65W", 1)])
    hardware.request()

    _, first = hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n1.csv.enc", [
        shipped(order_id, 1, "HS-ACME-X1", imei(10))]))
    assert (hardware.status(order_id), first.orders_waiting, first.ledger_charges) == ("AWAITING_DISPATCH", 1, 0)
    assert hardware.view(order_id)["lines"][0]["dispatched_quantity"] == 1

    _, second = hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n2.csv.enc", [
        shipped(order_id, 1, "HS-ACME-X1", imei(11))]))
    assert (hardware.status(order_id), second.ledger_charges) == ("AWAITING_DISPATCH", 0)  # the charger is due
    assert hardware.hardware_charges(account) == 0

    _, last = hardware.dispatch(hardware.drop_dispatch("WH_SOUTH", "s1.csv.enc", [
        shipped(order_id, 2, "PR-CHARGER-65W", "CHG-1")]))
    assert hardware.status(order_id) == "COMPLETE"
    assert (last.orders_completed, last.ledger_charges, last.ledger_minor) == (1, 1, 2 * 49900 + 3450)
    assert hardware.hardware_charges(account) == 103250


def test_a_line_the_warehouse_cannot_ship_fails_the_order_and_only_shipped_units_are_billed(hardware):
    account = "ACC00000014"
    order_id = hardware.order(account, [("HS-ACME-X1", 1), ("PR-CASE-X1", 2)], billing="NEXT_INVOICE")
    hardware.request()
    _, result = hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [
        shipped(order_id, 1, "HS-ACME-X1", imei(20)),
        failed(order_id, 2, "PR-CASE-X1", "Out of stock until January")]))

    view = hardware.view(order_id)
    assert view["status"] == "ERROR"
    assert view["error_reason"] == "WAREHOUSE_ERROR: line 2 (PR-CASE-X1): Out of stock until January"
    assert view["lines"][1]["error_reason"] == "Out of stock until January"
    assert (result.orders_failed, result.pending_charges, result.pending_minor) == (1, 1, 49900)
    assert hardware.pending(account) == [(order_id, 49900)]
    assert hardware.platform.query("SELECT event_code, source_ref, detail FROM workflow_events") == [
        ("ORDER_DISPATCH_ERROR", order_id, f"order {order_id} failed at the warehouse: line 2 (PR-CASE-X1): "
                                           "Out of stock until January; the units dispatched are billed")]


def test_bad_rows_each_get_their_specific_outcome_and_good_rows_still_count(hardware):
    account = "ACC00000015"
    order_id = hardware.order(account, [("HS-ACME-X1", 1), ("PR-CASE-X1", 1)])
    other = hardware.order("ACC00000016", [("LC-MDM-12M", 1)])
    hardware.request()
    load, result = hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "bad-rows.csv.enc", [
        shipped("HO09999999", 1, "HS-ACME-X1", imei(30)),              # row 2: unknown order
        shipped(order_id, 1, "HS-ACME-X1", imei(31, valid=False)),    # row 3: bad IMEI check digit
        shipped(order_id, 2, "PR-NOT-SOLD", "SN-9"),                  # row 4: unknown SKU
        "HO00000001,1,HS-ACME-X1",                                    # row 5: unreadable
        shipped(order_id, 2, "PR-CASE-X1", "CASE-1"),                 # row 6: good
        shipped(other, 1, "LC-MDM-12M", "LIC-1", when="31/02/2026 10:00"),  # row 7: no such date
        shipped(other, 1, "LC-MDM-12M", "LIC-2"),                     # row 8: good
        shipped(other, 1, "LC-MDM-12M", "LIC-3"),                     # row 9: one more than ordered
    ]))

    outcomes = hardware.outcomes(load)
    assert outcomes[2] == ("REJECTED", "UNKNOWN_ORDER", "order 'HO09999999' does not exist")
    assert outcomes[3] == ("REJECTED", "BAD_IMEI",
                           f"IMEI '{imei(31, valid=False)}' is not 15 digits with a valid check digit")
    assert outcomes[4] == ("REJECTED", "UNKNOWN_SKU", "SKU 'PR-NOT-SOLD' is not in the catalogue")
    assert outcomes[5] == ("REJECTED", "UNREADABLE_ROW", "row 5 has 3 field(s), expected 9: 'HO00000001,1,HS-ACME-X1'")
    assert outcomes[6] == ("DISPATCHED", None, None)
    assert outcomes[7] == ("REJECTED", "BAD_DISPATCH_DATE",
                           "DISPATCH_DATE '31/02/2026 10:00': must be DD/MM/YYYY HH:MM")
    assert outcomes[8] == ("DISPATCHED", None, None)
    assert outcomes[9][:2] == ("REJECTED", "OVER_DISPATCHED")
    # the handset line still waits (its record was bad); the licence order is complete and billed
    assert hardware.status(order_id) == "AWAITING_DISPATCH"
    assert hardware.status(other) == "COMPLETE"
    assert (result.ledger_charges, result.ledger_minor) == (1, 6000)
    assert hardware.hardware_charges(account) == 0
    errors = hardware.platform.query("SELECT category, source_ref, detail FROM job_errors ORDER BY source_ref")
    assert [e[2].split(":")[0] for e in errors] == ["UNKNOWN_ORDER", "BAD_IMEI", "UNKNOWN_SKU", "UNREADABLE_ROW",
                                                    "BAD_DISPATCH_DATE", "OVER_DISPATCHED"]
    assert {e[0] for e in errors} == {"DATA"}
    report = orjson.loads(hardware.platform.files.read_bytes(
        "outbound/reports/warehouse_dispatch/WH_NORTH/bad-rows.csv.outcomes.json"))
    assert report["header"]["outcomes"] == {"DISPATCHED": 2, "REJECTED": 6}
    assert report["records"][1]["problem_code"] == "BAD_IMEI"

    # the warehouse corrects the handset row in a new file: the order completes
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "fix.csv.enc", [shipped(order_id, 1, "HS-ACME-X1",
                                                                                 imei(31))]))
    assert hardware.status(order_id) == "COMPLETE"
    assert hardware.hardware_charges(account) == 49900 + 1999


def test_records_that_do_not_match_the_order(hardware):
    order_id = hardware.order("ACC00000017", [("HS-ACME-X1", 1), ("HS-ORBIT-5", 1)])
    hardware.request()
    load, _ = hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "mismatch.csv.enc", [
        shipped(order_id, 3, "HS-ACME-X1", imei(40)),
        shipped(order_id, 1, "PR-CASE-X1", "SN-1"),
        shipped(order_id, 2, "HS-ORBIT-5", imei(41)),
        shipped(order_id, 1, "HS-ACME-X1", "SERIAL-ONLY"),
        shipped(order_id, 1, "HS-ACME-X1", imei(42)),
        shipped(order_id, 1, "HS-ACME-X1", imei(42)),
        f"{order_id},1,HS-ACME-X1,LOST,,,,,",
    ]))
    codes = {position: row[1] for position, row in hardware.outcomes(load).items()}
    assert codes == {2: "UNKNOWN_LINE", 3: "SKU_MISMATCH", 4: "WRONG_WAREHOUSE", 5: "MISSING_IMEI", 6: None,
                     7: "DUPLICATE_DEVICE", 8: "BAD_STATUS"}


def test_duplicate_response_files_post_nothing_twice(hardware):
    account = "ACC00000018"
    order_id = hardware.order(account, [("HS-ACME-X1", 1)])
    hardware.request()
    rows = [shipped(order_id, 1, "HS-ACME-X1", imei(50))]
    key = hardware.drop_dispatch("WH_NORTH", "once.csv.enc", rows)
    _, result = hardware.dispatch(key)
    assert hardware.hardware_charges(account) == 49900

    again = hardware.drop_dispatch("WH_NORTH", "once-again.csv.enc", rows)  # same content, new name
    with pytest.raises(FileQuarantined) as quarantined:
        hardware.dispatch(again)
    assert quarantined.value.code == "DUPLICATE_FILE"
    assert "nothing posted" in quarantined.value.message
    error = orjson.loads(hardware.platform.files.read_bytes(
        "quarantine/warehouse_dispatch/WH_NORTH/once-again.csv.enc.error.json"))
    assert error["error_code"] == "DUPLICATE_FILE"

    _, rerun = hardware.dispatch(key)  # the same partition run again (a retry)
    assert rerun.applied_now is False and rerun.ledger_charges == 1
    assert hardware.hardware_charges(account) == 49900
    assert hardware.platform.query("SELECT count(*) FROM ledger_postings WHERE kind = 'HARDWARE_CHARGE'") == [(1,)]
    assert len(hardware.view(order_id)["history"]) == 4


@pytest.mark.parametrize(
    "content,encrypt_for,code,text",
    [
        (b"ORDER,LINE\nHO1,1\n", None, "CSV_HEADER", "missing column(s) ORDER_REF, LINE_NO"),
        (b"", None, "EMPTY_FILE", "empty"),
        (b"ORDER_REF,LINE_NO,SKU,STATUS,IMEI,SERIAL_NO,COURIER_REF,DISPATCH_DATE,ERROR_TEXT\n", "WH_SOUTH",
         "DECRYPT_FAILED", ""),
    ],
)
def test_bad_files_are_quarantined_with_the_reason(hardware, content, encrypt_for, code, text):
    key = hardware.drop_dispatch("WH_NORTH", "bad.csv.enc", content, encrypt_for=encrypt_for)
    with pytest.raises(FileQuarantined) as quarantined:
        hardware.dispatch(key)
    assert quarantined.value.code == code and text in quarantined.value.message
    assert hardware.platform.files.exists("quarantine/warehouse_dispatch/WH_NORTH/bad.csv.enc.error.json")


def test_card_numbers_are_never_stored(hardware):
    order_id = hardware.order("ACC00000019", [("PR-CASE-X1", 1), ("LC-MDM-12M", 1)])
    hardware.request()
    load, _ = hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "pan.csv.enc", [
        shipped(order_id, 1, "PR-CASE-X1", "CASE-1", courier="4111111111111111"),
        failed(order_id, 2, "LC-MDM-12M", f"licence bound to IMEI {imei(60)}"),
        f"{order_id},1,PR-CASE-X1,SHIPPED,5500005555555559,,DPD,21/11/2026 10:00,"]))
    outcomes = hardware.outcomes(load)
    assert outcomes[4] == ("REJECTED", "CARD_NUMBER", "field imei holds a card number (************5559); it was "
                                                      "masked, never stored")
    assert outcomes[2] == ("REJECTED", "CARD_NUMBER",
                           "field courier_reference holds a card number (************1111); it was masked, "
                           "never stored")
    assert outcomes[3] == ("LINE_ERROR", None, None)
    stored = hardware.platform.query("SELECT courier_reference, error_reason, imei FROM hw_dispatch_records "
                                     "WHERE batch_id = ? ORDER BY position", [load.batch_id])
    assert stored == [("************1111", None, None),
                      (None, "licence bound to IMEI ***********" + imei(60)[-4:], None),
                      ("DPD", None, "************5559")]
    converted = hardware.platform.files.read_bytes("converted/warehouse_dispatch/WH_NORTH/pan.csv.json")
    for secret in (b"4111111111111111", imei(60).encode(), b"5500005555555559"):
        assert secret not in converted
