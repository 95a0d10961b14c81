"""The hardware order probes as asset checks, one multi-check per job they follow."""


from cmp_pipelines.assets.hardware_orders import (
    device_enrolment_response_batch,
    sales_order_dispatch,
    sales_order_request_batch,
)
from cmp_pipelines.checks.probe_checks import probe_checks
from cmp_pipelines.domain.probes import PROBES_BY_ID

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
