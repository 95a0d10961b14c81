"""The billing feed in Dagster: its assets, job and sensor."""

import dagster as dg

from cmp_pipelines.core.expectations import RecordsSuite
from cmp_pipelines.defs.billing.assets import BILLING_ASSETS, GROUP, billing_files_partitions, billing_run_batch
from cmp_pipelines.lib.expectation_check import expectation_check
from cmp_pipelines.lib.inbound_sensor import inbound_file_sensor
from cmp_pipelines.lib.jobs import group_job
from cmp_pipelines.lib.metadata import flow_assets

billing_run_meets_expectations = expectation_check(
    asset=billing_run_batch, name="billing_run_meets_expectations", feed="billing run",
    spec=RecordsSuite("billing_run", "billing_records",
                      ("record_id", "record_type", "account_number", "email", "invoice_number", "amount_minor")))

billing_run_job = group_job(
    "billing_run_job", GROUP, billing_files_partitions,
    "A billing run: accounts and invoices loaded, invoices and next-invoice hardware charges posted, the ledger "
    "posting file and the acknowledgement of one file.",
)

billing_inbound_files_sensor = inbound_file_sensor(
    name="billing_inbound_files_sensor",
    feed="billing",
    job=billing_run_job,
    partitions_def=billing_files_partitions,
    description="Billing run files from the billing system: watches data/inbound/billing/<PARTNER>/.",
)

defs = dg.Definitions(
    assets=flow_assets(BILLING_ASSETS, "billing"),
    asset_checks=[billing_run_meets_expectations],
    jobs=[billing_run_job],
    sensors=[billing_inbound_files_sensor],
)
