"""Sales Order Request job: one JSON order per warehouse (schema-valid, encrypted for it), the fraud check when
the order asks for it, fraud failures in ERROR with the reason and a workflow event, and re-runs that change
nothing."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cmp_pipelines.core.files.schemas import first_error
from cmp_pipelines.defs.hardware_orders.fraud_check import ExternalFraudCheck, FraudCheck, RuleBasedFraudCheck
from cmp_pipelines.defs.hardware_orders.orders import Delivery
from cmp_pipelines.defs.hardware_orders.sales_orders import SalesOrderRequests, unfinished_batches
from tests.support.platform import NOW


@pytest.fixture
def hardware(any_hardware):
    """Every test of this module on both stores (the PostgreSQL one under the `postgres` marker)."""
    return any_hardware


def test_orders_go_to_their_warehouses_with_the_fraud_check_flag(hardware):
    split = hardware.order("ACC00000001", [("HS-ACME-X1", 1), ("PR-CHARGER-65W", 2), ("PR-CASE-X1", 1)])
    unchecked = hardware.order("ACC00000002", [("LC-MDM-12M", 3)], fraud_check=False,
                               delivery=Delivery("Acme Ltd", "Unit 4", "Park Road", "York", "yo1 7hh"))

    batch = hardware.request()

    assert (batch.status, batch.order_count, batch.fraud_checked, batch.fraud_failed, batch.sent_count) == (
        "SENT", 2, 1, 0, 2)
    north = hardware.read_request("WH_NORTH", batch.batch_id)
    south = hardware.read_request("WH_SOUTH", batch.batch_id)
    for document in (north, south):
        assert first_error("sales_order_request", document) is None
    assert north["header"] == {
        "file_id": f"{batch.batch_id}-WH_NORTH-GBP", "batch_id": batch.batch_id, "sender": "CMP",
        "recipient": "WH_NORTH", "created_at": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), "currency": "GBP",
        "order_count": 2, "line_count": 3, "unit_count": 5, "total_amount": "698.99"}
    assert [(o["order_id"], o["fraud_check"], o["fraud_check_result"]) for o in north["orders"]] == [
        (split, True, "PASSED"), (unchecked, False, "NOT_REQUIRED")]
    assert [(line["line_number"], line["sku"], line["quantity"], line["amount"])
            for line in north["orders"][0]["lines"]] == [(1, "HS-ACME-X1", 1, "499.00"), (3, "PR-CASE-X1", 1, "19.99")]
    assert north["orders"][1]["delivery"] == {"name": "Acme Ltd", "address_line1": "Unit 4",
                                              "address_line2": "Park Road", "town": "York", "postcode": "yo1 7hh"}
    assert south["header"]["total_amount"] == "69.00"
    assert [o["order_id"] for o in south["orders"]] == [split]
    for order_id in (split, unchecked):
        view = hardware.view(order_id)
        assert view["status"] == "AWAITING_DISPATCH" and view["request_batch_id"] == batch.batch_id
        assert view["history"][-1]["to"] == "AWAITING_DISPATCH"
        assert view["history"][-1]["cause"].startswith("sent to ")
    assert hardware.view(split)["history"][-1]["cause"] == f"sent to WH_NORTH, WH_SOUTH in {batch.batch_id}"
    assert hardware.request() is None  # nothing left awaiting generation


def test_a_failed_fraud_check_puts_the_order_in_error_with_the_reason_and_an_event(hardware):
    bad = hardware.order("ACC00000003", [("HS-ORBIT-5", 1)],
                         delivery=Delivery("  ", "1 Main St", None, "Bristol", "BS1 9ZZZ"))
    denied = hardware.order("ACC00000004", [("HS-ORBIT-5", 1)],
                            delivery=Delivery("John  Fraudster", "2 Main St", None, "Bristol", "BS1 4DJ"))
    good = hardware.order("ACC00000005", [("HS-ORBIT-5", 1)])

    batch = hardware.request()

    assert (batch.fraud_checked, batch.fraud_failed, batch.sent_count) == (3, 2, 1)
    view = hardware.view(bad)
    assert view["status"] == "ERROR"
    assert view["error_reason"] == ("FRAUD_CHECK_FAILED: NO_DELIVERY_NAME: no delivery name; "
                                    "BAD_POSTCODE: postcode 'BS1 9ZZZ' is not a UK postcode")
    assert view["history"][-1]["from"] == "AWAITING_GENERATION"
    assert view["history"][-1]["cause"].startswith(f"fraud check failed ({batch.batch_id}): NO_DELIVERY_NAME")
    assert hardware.view(denied)["error_reason"] == "FRAUD_CHECK_FAILED: DENIED_NAME: delivery name is on the deny list"
    assert hardware.status(good) == "AWAITING_DISPATCH"
    events = hardware.platform.query(
        "SELECT event_type, event_code, account_number, source_ref FROM workflow_events ORDER BY source_ref")
    assert events == [("HARDWARE_ORDER", "FRAUD_CHECK_FAILED", "ACC00000003", bad),
                      ("HARDWARE_ORDER", "FRAUD_CHECK_FAILED", "ACC00000004", denied)]
    [order] = hardware.read_request("WH_SOUTH", batch.batch_id)["orders"]
    assert order["order_id"] == good  # failed orders never reach the warehouse


def test_a_rerun_of_the_batch_changes_nothing(hardware):
    order_id = hardware.order("ACC00000006", [("PR-CASE-X1", 1)],
                              delivery=Delivery(None, None, None, None, None))
    good = hardware.order("ACC00000006", [("PR-CASE-X1", 2)])
    batch = hardware.request()
    with hardware.run() as (con, mirror):
        flow = SalesOrderRequests(con, hardware.platform.files, hardware.platform.keyring, hardware.config,
                                  RuleBasedFraudCheck(), NOW, mirror)
        again = flow.send(flow.check_fraud(flow.claim(batch.batch_id)))
    assert (again.status, again.fraud_failed, again.sent_count) == ("SENT", 1, 1)
    assert len(hardware.view(order_id)["history"]) == 3 and len(hardware.view(good)["history"]) == 3
    assert hardware.platform.query("SELECT count(*) FROM workflow_events") == [(1,)]
    assert hardware.read_request("WH_NORTH", batch.batch_id)["header"]["order_count"] == 1


class _Unreachable(FraudCheck):
    def assess(self, deliveries: pa.Table, config) -> pa.Table:
        return ExternalFraudCheck(url="http://127.0.0.1:9/fraud", timeout_seconds=0.5).assess(deliveries, config)


def test_an_unavailable_fraud_service_leaves_the_orders_waiting(hardware):
    import pytest

    from cmp_pipelines.defs.hardware_orders.fraud_check import FraudCheckUnavailable

    order_id = hardware.order("ACC00000007", [("PR-CASE-X1", 1)])
    with hardware.run() as (con, mirror):
        flow = SalesOrderRequests(con, hardware.platform.files, hardware.platform.keyring, hardware.config,
                                  _Unreachable(), NOW, mirror)
        batch = flow.claim("SOR-00000001")
        with pytest.raises(FraudCheckUnavailable, match="fraud check service http://127.0.0.1:9/fraud failed"):
            flow.check_fraud(batch)
    assert hardware.status(order_id) == "AWAITING_GENERATION"
    with hardware.store() as con:
        assert unfinished_batches(con) == ["SOR-00000001"]  # the sensor asks for it again
    with hardware.run() as (con, mirror):
        flow = SalesOrderRequests(con, hardware.platform.files, hardware.platform.keyring, hardware.config,
                                  RuleBasedFraudCheck(), NOW, mirror)
        assert flow.send(flow.check_fraud(flow.claim("SOR-00000001"))).sent_count == 1
    with hardware.store() as con:
        assert unfinished_batches(con) == []
    assert hardware.status(order_id) == "AWAITING_DISPATCH"


class _Forgetful(FraudCheck):
    """A fraud service that leaves an order out of its answer."""

    def assess(self, deliveries: pa.Table, config) -> pa.Table:
        return RuleBasedFraudCheck().assess(deliveries, config).slice(1)


def test_an_order_without_a_verdict_is_never_sent(hardware):
    import pytest

    from cmp_pipelines.defs.hardware_orders.sales_orders import FraudCheckIncomplete

    first = hardware.order("ACC00000008", [("PR-CASE-X1", 1)])
    hardware.order("ACC00000009", [("PR-CASE-X1", 1)])
    with hardware.run() as (con, mirror):
        flow = SalesOrderRequests(con, hardware.platform.files, hardware.platform.keyring, hardware.config,
                                  _Forgetful(), NOW, mirror)
        batch = flow.claim("SOR-00000002")
        with pytest.raises(FraudCheckIncomplete, match=f"no verdict for {first}"):
            flow.check_fraud(batch)
        assert flow.batch("SOR-00000002").status == "CLAIMED"
    assert hardware.platform.query("SELECT count(*) FROM hw_fraud_checks") == [(0,)]
    assert hardware.status(first) == "AWAITING_GENERATION"
