"""The hardware orders flow in Dagster: sales order requests, warehouse dispatch, device enrolment; their probes,
jobs, sensors, schedules and the resources only this flow uses."""

import dagster as dg

from cmp_pipelines.core.expectations import RecordsSuite
from cmp_pipelines.core.probes import PROBES_BY_ID
from cmp_pipelines.defs.hardware_orders.assets import (
    DISPATCH_GROUP,
    ENROLMENT_REQUEST_GROUP,
    ENROLMENT_RESPONSE_GROUP,
    HARDWARE_ORDER_ASSETS,
    REQUEST_GROUP,
    device_enrolment_response_batch,
    enrolment_days_partitions,
    enrolment_response_files_partitions,
    sales_order_dispatch,
    sales_order_request_batch,
    sales_order_request_partitions,
    warehouse_dispatch_batch,
    warehouse_dispatch_files_partitions,
)
from cmp_pipelines.defs.hardware_orders.fraud_check import RuleBasedFraudCheck
from cmp_pipelines.defs.hardware_orders.manufacturer import FileDropManufacturer
from cmp_pipelines.defs.hardware_orders.sensors import sales_order_request_sensor
from cmp_pipelines.defs.hardware_orders.warehouse import StockFileWarehouse
from cmp_pipelines.lib.expectation_check import expectation_check
from cmp_pipelines.lib.inbound_sensor import inbound_file_sensor
from cmp_pipelines.lib.jobs import daily_schedule, end_of_day_schedule, group_job, probes_job
from cmp_pipelines.lib.metadata import flow_assets
from cmp_pipelines.lib.probe_checks import probe_checks

sales_order_request_probes = probe_checks(
    "sales_order_request_probes",
    (PROBES_BY_ID["hw_fraud_check_failures_today"],),
    {"hw_fraud_check_failures_today": sales_order_request_batch.key},
)

sales_order_dispatch_probes = probe_checks(
    "sales_order_dispatch_probes",
    (PROBES_BY_ID["hw_orders_stuck_awaiting_dispatch"],),
    {"hw_orders_stuck_awaiting_dispatch": sales_order_dispatch.key},
)

device_enrolment_probes = probe_checks(
    "device_enrolment_probes",
    (PROBES_BY_ID["hw_enrolment_failures_latest_response"],),
    {"hw_enrolment_failures_latest_response": device_enrolment_response_batch.key},
)

HARDWARE_PROBE_CHECKS = [sales_order_request_probes, sales_order_dispatch_probes, device_enrolment_probes]

warehouse_dispatch_meets_expectations = expectation_check(
    asset=warehouse_dispatch_batch, name="warehouse_dispatch_meets_expectations", feed="warehouse dispatch",
    spec=RecordsSuite("warehouse_dispatch", "hw_dispatch_records",
                      ("order_id", "sku", "status", "imei", "courier_reference")))

device_enrolment_responses_meet_expectations = expectation_check(
    asset=device_enrolment_response_batch, name="device_enrolment_responses_meet_expectations",
    feed="device enrolment response",
    spec=RecordsSuite("device_enrolment_responses", "hw_enrolment_responses",
                      ("record_id", "request_id", "device_id", "result")))

HARDWARE_EXPECTATION_CHECKS = [warehouse_dispatch_meets_expectations, device_enrolment_responses_meet_expectations]

sales_order_request_job = group_job(
    "sales_order_request_job", REQUEST_GROUP, sales_order_request_partitions,
    "CMP Sales Order Request job: orders awaiting generation, fraud-checked, sent to their warehouses.",
)

sales_order_dispatch_job = group_job(
    "sales_order_dispatch_job", DISPATCH_GROUP, warehouse_dispatch_files_partitions,
    "CMP Sales Order Dispatch job: one warehouse response file, its orders completed or failed, billed.",
)

device_enrolment_request_job = group_job(
    "device_enrolment_request_job", ENROLMENT_REQUEST_GROUP, enrolment_days_partitions,
    "CMP Device Enrolment Request job: the day's enrolment and unenrolment batches per manufacturer.",
)

device_enrolment_response_job = group_job(
    "device_enrolment_response_job", ENROLMENT_RESPONSE_GROUP, enrolment_response_files_partitions,
    "CMP Device Enrolment Response job: one manufacturer response file, applied per device.",
)

hardware_probes_job = probes_job(
    "hardware_order_probes_job", HARDWARE_PROBE_CHECKS,
    "Evaluates the hardware order probes (stuck orders, fraud failures, enrolment failures).",
)

HARDWARE_JOBS = [sales_order_request_job, sales_order_dispatch_job, device_enrolment_request_job,
                 device_enrolment_response_job, hardware_probes_job]

HARDWARE_SENSORS = [
    sales_order_request_sensor(job=sales_order_request_job, partitions_def=sales_order_request_partitions),
    inbound_file_sensor(
        name="warehouse_dispatch_files_sensor",
        feed="warehouse_dispatch",
        job=sales_order_dispatch_job,
        partitions_def=warehouse_dispatch_files_partitions,
        description="CMP warehouse response adaptor: watches data/inbound/warehouse_dispatch/<WAREHOUSE>/.",
    ),
    inbound_file_sensor(
        name="device_enrolment_response_files_sensor",
        feed="device_enrolment",
        job=device_enrolment_response_job,
        partitions_def=enrolment_response_files_partitions,
        description="CMP Device Enrolment Response trigger: watches data/inbound/device_enrolment/<MANUFACTURER>/.",
    ),
]

HARDWARE_SCHEDULES = [
    daily_schedule(
        "device_enrolment_request_daily_schedule", device_enrolment_request_job, hour=3, minute=0,
        description="Daily at 03:00 UTC: the day's enrolment and unenrolment batches go to the manufacturers.",
    ),
    end_of_day_schedule(
        "hardware_order_probes_end_of_day_schedule", hardware_probes_job, "50 23 * * *",
        "End of day: stuck orders and today's fraud failures are counted even when no job ran.",
    ),
]

HARDWARE_RESOURCES = {
    "fraud_check": RuleBasedFraudCheck(),
    "device_manufacturer": FileDropManufacturer(),
    "warehouse_stock": StockFileWarehouse(),
}

defs = dg.Definitions(
    assets=flow_assets(HARDWARE_ORDER_ASSETS, "hardware_orders"),
    asset_checks=[*HARDWARE_PROBE_CHECKS, *HARDWARE_EXPECTATION_CHECKS],
    jobs=HARDWARE_JOBS,
    sensors=HARDWARE_SENSORS,
    schedules=HARDWARE_SCHEDULES,
    resources=HARDWARE_RESOURCES,
)
