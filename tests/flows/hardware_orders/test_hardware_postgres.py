"""The hardware-order flows on PostgreSQL: two runs at once over the same orders and devices decide once (the
`hw:state` lock, defs/hardware_orders/pg.py), and the same scenario gives the same files, byte for byte, and the
same rows on both stores."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.defs.hardware_orders.dispatch import WarehouseDispatch
from cmp_pipelines.defs.hardware_orders.fraud_check import RuleBasedFraudCheck
from cmp_pipelines.defs.hardware_orders.orders import Delivery
from cmp_pipelines.defs.hardware_orders.sales_orders import SalesOrderRequests
from tests.support.hardware import CONFIG, Hardware, _hardware, imei, shipped
from tests.support.platform import NOW

pytestmark = pytest.mark.postgres


def at_once(*jobs: Callable[[], object]) -> list:
    """Run `jobs` in threads released together (each on its own scratch and PostgreSQL connection); returns their
    results, raising the first error any of them met (a deadlock among them)."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job) -> None:
        try:
            barrier.wait()
            results[index] = job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def request_run(hardware: Hardware, batch_id: str):
    def job():
        with mirrored(hardware.platform.url) as mirror:
            flow = SalesOrderRequests(mirror.con, hardware.platform.files, hardware.platform.keyring,
                                      hardware.config, RuleBasedFraudCheck(), NOW, mirror)
            return flow.send(flow.check_fraud(flow.claim(batch_id)))
    return job


def dispatch_run(hardware: Hardware, key: str):
    def job():
        with mirrored(hardware.platform.url) as mirror:
            flow = WarehouseDispatch(mirror.con, hardware.platform.files, hardware.platform.keyring,
                                     load_partners(CONFIG), hardware.config, NOW, mirror)
            load = flow.load(key)
            result = flow.apply(load)
            flow.write_posting_file(result)
            flow.write_report(load, result)
            return load, result
    return job


@pytest.fixture
def pg_hardware(pg_platform) -> Hardware:
    return _hardware(pg_platform)


def test_two_runs_at_once_claim_send_allocate_and_bill_once(pg_hardware):
    hardware = pg_hardware
    single = hardware.order("ACC00000011", [("HS-ACME-X1", 1)])
    double = hardware.order("ACC00000012", [("HS-ACME-X1", 2)], billing="NEXT_INVOICE")
    refused = hardware.order("ACC00000013", [("PR-CASE-X1", 1)], delivery=Delivery("Sam", "9 Low Road", None,
                                                                                    "Hull", None))
    [[up_to]] = hardware.platform.query("SELECT max(generation_seq) FROM hw_orders")
    batch_id = f"SOR-{up_to:08d}"

    first, second = at_once(request_run(hardware, batch_id), request_run(hardware, batch_id))

    assert (first.status, second.status) == ("SENT", "SENT")
    assert first.sent_count == second.sent_count == 2 and first.fraud_failed == second.fraud_failed == 1
    assert hardware.platform.query(
        "SELECT order_id, new_status, count(*) FROM hw_order_history WHERE old_status = 'AWAITING_GENERATION' "
        "GROUP BY 1, 2 ORDER BY 1") == [(single, "AWAITING_DISPATCH", 1), (double, "AWAITING_DISPATCH", 1),
                                        (refused, "ERROR", 1)]
    assert hardware.platform.query("SELECT count(*) FROM hw_request_orders") == [(3,)]
    assert hardware.platform.query("SELECT count(*) FROM hw_fraud_checks") == [(3,)]
    assert hardware.platform.query("SELECT event_code, source_ref FROM workflow_events") == [
        ("FRAUD_CHECK_FAILED", refused)]
    assert hardware.platform.query("SELECT count(*) FROM delivery_register WHERE document_kind = "
                                   "'SALES_ORDER_REQUEST'") == [(1,)]

    # two warehouse files at once: both ship the single order's one unit (the second finds it complete), and the
    # same device to the double order (allocated once)
    north = hardware.drop_dispatch("WH_NORTH", "n1.csv.enc", [shipped(single, 1, "HS-ACME-X1", imei(1)),
                                                              shipped(double, 1, "HS-ACME-X1", imei(5))])
    again = hardware.drop_dispatch("WH_NORTH", "n2.csv.enc", [shipped(single, 1, "HS-ACME-X1", imei(2)),
                                                              shipped(double, 1, "HS-ACME-X1", imei(5), courier="X")])
    (load_a, result_a), (load_b, result_b) = at_once(dispatch_run(hardware, north), dispatch_run(hardware, again))

    outcomes = sorted(hardware.platform.query(
        "SELECT order_id, outcome, coalesce(problem_code, '') FROM hw_dispatch_records ORDER BY 1, 2, 3"))
    assert outcomes == sorted([(double, "DISPATCHED", ""), (double, "REJECTED", "DUPLICATE_DEVICE"),
                               (single, "DISPATCHED", ""), (single, "REJECTED", "ORDER_NOT_AWAITING_DISPATCH")])
    assert hardware.platform.query("SELECT device_id, order_id FROM hw_devices ORDER BY 1") in (
        [(imei(1), single), (imei(5), double)], [(imei(2), single), (imei(5), double)])
    assert hardware.platform.query("SELECT order_id, new_status, count(*) FROM hw_order_history "
                                   "WHERE old_status = 'AWAITING_DISPATCH' GROUP BY 1, 2") == [(single, "COMPLETE", 1)]
    assert hardware.status(double) == "AWAITING_DISPATCH"  # one of its two units shipped
    assert hardware.platform.query("SELECT account_number, amount_minor FROM ledger_postings "
                                   "WHERE kind = 'HARDWARE_CHARGE'") == [("ACC00000011", 49900)]
    assert result_a.ledger_charges + result_b.ledger_charges == 1
    assert hardware.platform.query("SELECT count(*) FROM hw_pending_charges") == [(0,)]
    assert {load_a.status, load_b.status} == {"LOADED"}
