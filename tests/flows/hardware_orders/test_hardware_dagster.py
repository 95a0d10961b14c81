"""Hardware orders through Dagster: the Sales Order Request sensor and job, the warehouse response sensor and the
Sales Order Dispatch job, the daily Device Enrolment Request partition and the response sensor, the probe checks,
and the metadata an operator sees in the UI."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from cmp_pipelines.definitions import build_definitions, defs
from cmp_pipelines.lib.headless import run_partition, run_pending_sensors
from tests.support.dagster import check_results, flow_runs, materialization
from tests.support.hardware import answer, imei, shipped
from tests.support.platform import NOW

# Whole runs through Dagster (sensors, jobs, run-pending): left out of `make test-fast`.
pytestmark = pytest.mark.e2e


def quiet(_: str) -> None:
    pass


def test_an_order_through_request_dispatch_and_enrolment(any_hardware, instance):
    hardware = any_hardware  # on both stores (PostgreSQL under the `postgres` marker)
    definitions = build_definitions()
    order_id = hardware.order("ACC00000004", [("HS-ACME-X1", 1), ("PR-CASE-X1", 1)], enrolment=True)
    refused = hardware.order("ACC00000005", [("PR-CASE-X1", 1)], delivery=hardware_delivery_without_postcode())

    [request] = flow_runs(run_pending_sensors(definitions, instance, echo=quiet))

    assert request.success, request.error
    assert request.partition_key == "SOR-00000002"
    batch = materialization(instance, request.run_id, "sales_order_request_batch")
    assert (batch["order_count"], batch["fraud_checked"], batch["fraud_failed"]) == (2, 2, 1)
    files = materialization(instance, request.run_id, "sales_order_request_files")
    assert files["files_written"] == ["outbound/sales_orders/WH_NORTH/SOR-00000002-WH_NORTH-GBP.json.enc"]
    assert check_results(instance, request.run_id)["hw_fraud_check_failures_today_within_threshold"].passed
    assert (hardware.status(order_id), hardware.status(refused)) == ("AWAITING_DISPATCH", "ERROR")
    assert flow_runs(run_pending_sensors(definitions, instance, echo=quiet)) == []

    before = hardware.platform.balance("ACC00000004")
    hardware.drop_dispatch("WH_NORTH", "north-1.csv.enc", [shipped(order_id, 1, "HS-ACME-X1", imei(7)),
                                                           shipped(order_id, 2, "PR-CASE-X1", "CASE-7")])
    [dispatch] = flow_runs(run_pending_sensors(definitions, instance, echo=quiet))

    assert dispatch.success, dispatch.error
    loaded = materialization(instance, dispatch.run_id, "warehouse_dispatch_batch")
    assert loaded["outcomes"] == {"LOADED": 2}
    assert loaded["files_written"] == "converted/warehouse_dispatch/WH_NORTH/north-1.csv.json"
    applied = materialization(instance, dispatch.run_id, "sales_order_dispatch")
    assert (applied["orders_completed"], applied["ledger_charges"], applied["ledger_amount"]) == (1, 1, "518.99")
    assert hardware.platform.balance("ACC00000004") - before == 51899
    assert check_results(instance, dispatch.run_id)["hw_orders_stuck_awaiting_dispatch_within_threshold"].passed
    suite = check_results(instance, dispatch.run_id)["warehouse_dispatch_meets_expectations"]
    assert suite.passed and suite.metadata["records"].value == 2, suite.description
    assert hardware.status(order_id) == "COMPLETE"

    enrol = run_partition("device_enrolment_request_job", NOW.date().isoformat(), definitions, instance)
    assert enrol.success, enrol.error
    selected = materialization(instance, enrol.run_id, "device_enrolment_request_batch")
    assert selected["by_manufacturer"] == {"ACME_MOBILE": 1}
    [request_record] = hardware.read_enrolment("ACME_MOBILE", selected["batch_id"])["requests"]
    hardware.drop_response("ACME_MOBILE", "acme-1.json.enc", [
        answer("1", request_record["request_id"], imei(7), "FAILED", "IMEI not registered")])
    [response] = flow_runs(run_pending_sensors(definitions, instance, echo=quiet))

    assert response.success, response.error
    assert materialization(instance, response.run_id, "device_enrolment_response_batch")["outcomes"] == {"FAILED": 1}
    check = check_results(instance, response.run_id)["hw_enrolment_failures_latest_response_within_threshold"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    suite = check_results(instance, response.run_id)["device_enrolment_responses_meet_expectations"]
    assert suite.passed and suite.metadata["records"].value == 1, suite.description  # a failure is valid data
    assert hardware.platform.files.list_files("outbound/alerts")  # the alert went to its recipients
    assert hardware.device(imei(7)) == ("ENROL_FAILED", "IMEI not registered")


def test_a_quarantined_warehouse_file_fails_its_run_with_the_reason(hardware, instance):
    hardware.drop_dispatch("WH_SOUTH", "garbled.csv.enc", b"ORDER_REF;LINE_NO\n1;2\n")
    [run] = flow_runs(run_pending_sensors(defs, instance, echo=quiet))
    assert not run.success
    assert run.error.startswith("File quarantined (CSV_HEADER)")
    assert hardware.platform.files.exists("quarantine/warehouse_dispatch/WH_SOUTH/garbled.csv.enc.error.json")


def test_the_probes_job_counts_stuck_orders(hardware, instance):
    order_id = hardware.order("ACC00000006", [("PR-CASE-X1", 1)])
    hardware.request(now=NOW - timedelta(days=6))
    job = build_definitions().get_repository_def().get_job("hardware_order_probes_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False)  # as the end-of-day schedule runs it
    assert result.success
    checks = check_results(instance, result.run_id)
    stuck = checks["hw_orders_stuck_awaiting_dispatch_within_threshold"]
    assert not stuck.passed and stuck.metadata["value"].value == 1
    assert hardware.status(order_id) == "AWAITING_DISPATCH"


def hardware_delivery_without_postcode():
    from cmp_pipelines.defs.hardware_orders.orders import Delivery

    return Delivery("Sam Smith", "9 Low Road", None, "Hull", None)


def test_the_request_sensor_asks_again_for_orders_a_failed_run_left(hardware):
    from cmp_pipelines.defs.hardware_orders.defs import HARDWARE_SENSORS
    from cmp_pipelines.lib.resources.database import Database

    [sensor] = [s for s in HARDWARE_SENSORS if s.name == "sales_order_request_sensor"]
    hardware.order("ACC00000007", [("PR-CASE-X1", 1)])
    # generated just now by the sensor's clock (the suite's NOW is fixed at import, maybe more than 15 min ago)
    hardware.platform.query("UPDATE hw_orders SET generated_at = now()")

    def tick():
        with dg.build_sensor_context(resources={"database": Database()}) as context:  # as the daemon enters it
            return [(r.partition_key, r.run_key) for r in sensor(context).run_requests or []]

    assert tick() == [("SOR-00000001", "SOR-00000001")]
    hardware.platform.query("UPDATE hw_orders SET generated_at = generated_at - INTERVAL 1 HOUR")
    [(key, run_key)] = tick()
    assert key == "SOR-00000001" and run_key.startswith("SOR-00000001#retry-")
    hardware.request()
    assert tick() == []
    hardware.platform.query("UPDATE batches SET status = 'CLAIMED', created_at = created_at - INTERVAL 1 DAY "
                            "WHERE batch_id = 'SOR-00000001'")
    assert [k for k, _ in tick()] == ["SOR-00000001"]  # claimed but never sent: run again
