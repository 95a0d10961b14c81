"""Device Enrolment Request / Response: enrolment and unenrolment round trips per manufacturer, failures with
their reason and a workflow event, bad answers rejected one by one, and answers never applied twice."""

from __future__ import annotations

import pytest

from cmp_pipelines.core.files.schemas import first_error
from cmp_pipelines.core.intake import FileQuarantined
from cmp_pipelines.defs.hardware_orders.enrolment import request_enrolment, request_unenrolment
from cmp_pipelines.defs.hardware_orders.orders import OrderError
from tests.support.hardware import answer, imei, shipped
from tests.support.platform import NOW

DAY = NOW.date()


@pytest.fixture
def hardware(any_hardware):
    """Every test of this module on both stores (the PostgreSQL one under the `postgres` marker)."""
    return any_hardware


@pytest.fixture
def dispatched(hardware):
    """Two orders asking for enrolment (an Acme and an Orbit handset, a case) and one that does not."""
    enrol = hardware.order("ACC00000001", [("HS-ACME-X1", 2), ("PR-CASE-X1", 1)], enrolment=True)
    orbit = hardware.order("ACC00000002", [("HS-ORBIT-5", 1)], enrolment=True)
    plain = hardware.order("ACC00000003", [("HS-ACME-X1", 1)])
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [
        shipped(enrol, 1, "HS-ACME-X1", imei(1)), shipped(enrol, 1, "HS-ACME-X1", imei(2)),
        shipped(enrol, 2, "PR-CASE-X1", "CASE-1"), shipped(plain, 1, "HS-ACME-X1", imei(3))]))
    hardware.dispatch(hardware.drop_dispatch("WH_SOUTH", "s.csv.enc", [shipped(orbit, 1, "HS-ORBIT-5", imei(4))]))
    return hardware


def test_enrolment_round_trip_per_manufacturer(dispatched):
    hardware = dispatched
    batch = hardware.enrolment_day(DAY)

    assert (batch.status, batch.enrol_count, batch.unenrol_count) == ("SENT", 3, 0)
    assert batch.by_manufacturer == {"ACME_MOBILE": 2, "ORBIT_DEVICES": 1}
    acme = hardware.read_enrolment("ACME_MOBILE", batch.batch_id)
    assert first_error("device_enrolment_request", acme) is None
    assert acme["header"]["record_count"] == acme["header"]["enrol_count"] == 2
    assert [(r["action"], r["device_id"], r["customer_reference"]) for r in acme["requests"]] == [
        ("ENROL", imei(1), "ACC00000001"), ("ENROL", imei(2), "ACC00000001")]
    assert hardware.device(imei(3)) == ("NOT_REQUESTED", None)  # its order did not ask
    assert hardware.device(imei(1)) == ("ENROL_REQUESTED", None)
    first, second = (r["request_id"] for r in acme["requests"])

    load = hardware.process_response(hardware.drop_response("ACME_MOBILE", "acme-r1.json.enc", [
        answer("1", first, imei(1), "ENROLLED"),
        answer("2", second, imei(2), "FAILED", "device not in the reseller's allocation")]))

    assert load.outcomes == {"ENROLLED": 1, "FAILED": 1}
    assert hardware.device(imei(1)) == ("ENROLLED", None)
    assert hardware.device(imei(2)) == ("ENROL_FAILED", "device not in the reseller's allocation")
    assert hardware.platform.query("SELECT event_type, event_code, account_number, source_ref, detail "
                                   "FROM workflow_events") == [
        ("DEVICE_ENROLMENT", "ENROLMENT_FAILED", "ACC00000001", imei(2),
         f"enrolment of {imei(2)} failed at ACME_MOBILE: device not in the reseller's allocation")]
    assert hardware.enrolment_day(DAY).enrol_count == 3  # the day's batch is frozen: nothing re-sent
    assert hardware.platform.query(
        "SELECT partner, count(*) FROM delivery_register WHERE document_kind = 'ENROLMENT_REQUEST' GROUP BY 1 "
        "ORDER BY 1") == [("ACME_MOBILE", 1), ("ORBIT_DEVICES", 1)]  # registered for delivery once each
    assert hardware.platform.query("SELECT DISTINCT partner FROM delivery_register "
                                   "WHERE document_kind = 'SALES_ORDER_REQUEST' ORDER BY 1") == [
        ("WH_NORTH",), ("WH_SOUTH",)]


def test_unenrolment_round_trip_and_the_agent_requests(dispatched):
    hardware = dispatched
    batch = hardware.enrolment_day(DAY)
    [request] = hardware.read_enrolment("ORBIT_DEVICES", batch.batch_id)["requests"]
    hardware.process_response(hardware.drop_response("ORBIT_DEVICES", "o1.json.enc", [
        answer("1", request["request_id"], imei(4), "ENROLLED")]))
    with hardware.store() as con:
        view = request_unenrolment(con, imei(4), now=NOW)
        assert view["enrolment_status"] == "UNENROL_PENDING"
        with pytest.raises(OrderError, match="is UNENROL_PENDING: unenrol is possible from ENROLLED"):
            request_unenrolment(con, imei(4), now=NOW)
        with pytest.raises(OrderError, match="not a handset"):
            request_enrolment(con, "CASE-1", now=NOW)
        with pytest.raises(OrderError) as unknown:
            request_unenrolment(con, "NOPE", now=NOW)
        assert unknown.value.status == 404
        assert request_enrolment(con, imei(3), now=NOW)["enrolment_status"] == "ENROL_PENDING"

    tomorrow = hardware.enrolment_day(DAY.fromordinal(DAY.toordinal() + 1))
    assert (tomorrow.enrol_count, tomorrow.unenrol_count) == (1, 1)
    [unenrol] = hardware.read_enrolment("ORBIT_DEVICES", tomorrow.batch_id)["requests"]
    assert (unenrol["action"], unenrol["device_id"]) == ("UNENROL", imei(4))
    hardware.process_response(hardware.drop_response("ORBIT_DEVICES", "o2.json.enc", [
        answer("1", unenrol["request_id"], imei(4), "UNENROLLED")]))
    assert hardware.device(imei(4)) == ("UNENROLLED", None)
    with hardware.store() as con:
        from cmp_pipelines.defs.hardware_orders.enrolment import device_view

        assert [(r["action"], r["outcome"]) for r in device_view(con, imei(4))["requests"]] == [
            ("ENROL", "ENROLLED"), ("UNENROL", "UNENROLLED")]


def test_bad_answers_are_rejected_one_by_one_and_nothing_is_applied_twice(dispatched):
    hardware = dispatched
    batch = hardware.enrolment_day(DAY)
    first, second = (r["request_id"] for r in hardware.read_enrolment("ACME_MOBILE", batch.batch_id)["requests"])
    [orbit] = (r["request_id"] for r in hardware.read_enrolment("ORBIT_DEVICES", batch.batch_id)["requests"])
    records = [
        answer("1", "DER-20200101-9", imei(1), "ENROLLED"),
        answer("2", orbit, imei(4), "ENROLLED"),
        answer("3", first, imei(2), "ENROLLED"),
        answer("4", first, imei(1), "UNENROLLED"),
        answer("5", second, imei(2), "FAILED"),
        answer("6", first, imei(1), "ENROLLED"),
        answer("7", first, imei(1), "ENROLLED"),
        {"record_id": "8", "request_id": second},
        answer("9", second, "4111 1111 1111 1111", "ENROLLED"),
    ]
    key = hardware.drop_response("ACME_MOBILE", "acme-bad.json.enc", records)
    load = hardware.process_response(key)
    rows = hardware.platform.query("SELECT position, outcome, problem_code FROM hw_enrolment_responses "
                                   "WHERE batch_id = ? ORDER BY position", [load.batch_id])
    assert rows == [(1, "REJECTED", "UNKNOWN_REQUEST"), (2, "REJECTED", "WRONG_MANUFACTURER"),
                    (3, "REJECTED", "DEVICE_MISMATCH"), (4, "REJECTED", "BAD_RESULT"),
                    (5, "REJECTED", "MISSING_REASON"), (6, "ENROLLED", None), (7, "REJECTED", "REPEATED_IN_FILE"),
                    (8, "REJECTED", "MALFORMED_RECORD"), (9, "REJECTED", "CARD_NUMBER")]
    assert hardware.platform.query("SELECT device_id FROM hw_enrolment_responses WHERE position = 9") == [
        ("************1111",)]
    assert hardware.device(imei(1)) == ("ENROLLED", None)
    assert hardware.device(imei(2)) == ("ENROL_REQUESTED", None)  # still waiting for a proper answer

    assert hardware.process_response(key).status == "ALREADY_LOADED"  # the partition re-run
    again = hardware.drop_response("ACME_MOBILE", "acme-late.json.enc", [answer("1", first, imei(1), "ENROLLED")])
    late = hardware.process_response(again)
    assert late.problems == {"ALREADY_ANSWERED": 1}
    with pytest.raises(FileQuarantined) as duplicate:
        hardware.process_response(hardware.drop_response("ACME_MOBILE", "acme-bad-copy.json.enc", records,
                                                            file_id="acme-bad"))
    assert duplicate.value.code == "DUPLICATE_FILE"
    assert hardware.platform.query("SELECT count(*) FROM hw_enrolment_requests WHERE outcome IS NOT NULL") == [(1,)]


def test_a_response_from_the_wrong_sender_is_quarantined(dispatched):
    key = dispatched.drop_response("ACME_MOBILE", "x.json.enc", [], sender="ORBIT_DEVICES")
    with pytest.raises(FileQuarantined) as quarantined:
        dispatched.process_response(key)
    assert quarantined.value.code == "SENDER_MISMATCH"
