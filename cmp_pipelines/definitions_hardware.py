"""The hardware orders part of the code location: jobs, sensors, schedules and the resources they use.

`definitions.py` adds these lists to the one `dg.Definitions`."""

from cmp_pipelines.assets.hardware_orders import (
    DISPATCH_GROUP,
    ENROLMENT_REQUEST_GROUP,
    ENROLMENT_RESPONSE_GROUP,
    HARDWARE_ORDER_ASSETS,
    REQUEST_GROUP,
    enrolment_days_partitions,
    enrolment_response_files_partitions,
    sales_order_request_partitions,
    warehouse_dispatch_files_partitions,
)
from cmp_pipelines.checks.hardware_probes import HARDWARE_PROBE_CHECKS
from cmp_pipelines.job_factories import daily_schedule, end_of_day_schedule, group_job, probes_job
from cmp_pipelines.resources.device_manufacturer import FileDropManufacturer
from cmp_pipelines.resources.fraud_check import RuleBasedFraudCheck
from cmp_pipelines.resources.warehouse import StockFileWarehouse
from cmp_pipelines.sensors.hardware_orders import sales_order_request_sensor
from cmp_pipelines.sensors.inbound import inbound_file_sensor

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

__all__ = ["HARDWARE_ORDER_ASSETS", "HARDWARE_PROBE_CHECKS", "HARDWARE_JOBS", "HARDWARE_SENSORS",
           "HARDWARE_SCHEDULES", "HARDWARE_RESOURCES"]
