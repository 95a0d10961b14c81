"""The delivery receipts feed: its sensor and job."""

import dagster as dg

from cmp_pipelines.defs.receipts.assets import GROUP, delivery_receipts, receipt_files_partitions
from cmp_pipelines.lib.inbound_sensor import inbound_file_sensor
from cmp_pipelines.lib.jobs import group_job
from cmp_pipelines.lib.metadata import flow_assets

delivery_receipts_job = group_job(
    "delivery_receipts_job", GROUP, receipt_files_partitions,
    "Marks the documents a partner's receipt names CONFIRMED (or FAILED, when the partner rejected them).",
)

delivery_receipt_files_sensor = inbound_file_sensor(
    name="delivery_receipt_files_sensor", feed="delivery_receipts", job=delivery_receipts_job,
    partitions_def=receipt_files_partitions,
    description="Receipt files from the sales ledger and the Bacs bureau in inbound/delivery_receipts/<PARTNER>/.",
)

defs = dg.Definitions(
    assets=flow_assets([delivery_receipts], "receipts"),
    jobs=[delivery_receipts_job],
    sensors=[delivery_receipt_files_sensor],
)
