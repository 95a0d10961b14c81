"""The card rejections flow in Dagster: one provider rejection file a run, its probes, job and sensor."""

import dagster as dg

from cmp_pipelines.core.expectations import RecordsSuite
from cmp_pipelines.core.probes import PROBES_BY_ID
from cmp_pipelines.defs.card_rejections.assets import (
    CARD_REJECTION_ASSETS,
    GROUP,
    card_rejection_files_partitions,
    card_rejections_batch,
)
from cmp_pipelines.lib.expectation_check import expectation_check
from cmp_pipelines.lib.inbound_sensor import inbound_file_sensor
from cmp_pipelines.lib.jobs import group_job
from cmp_pipelines.lib.metadata import flow_assets
from cmp_pipelines.lib.probe_checks import probe_checks

card_rejection_probes = probe_checks(
    "card_rejection_probes",
    (PROBES_BY_ID["card_rejection_rate"], PROBES_BY_ID["card_rejections_completed_sla"]),
    {"card_rejection_rate": card_rejections_batch.key,
     "card_rejections_completed_sla": card_rejections_batch.key},
)

card_rejections_meet_expectations = expectation_check(
    asset=card_rejections_batch, name="card_rejections_meet_expectations", feed="card rejections",
    spec=RecordsSuite("card_rejections", "card_rejections",
                      ("record_id", "transaction_id", "account_number", "amount_minor", "reason_code")))

card_rejections_job = group_job(
    "recurring_payments_rejections_card_job", GROUP, card_rejection_files_partitions,
    "CMP Recurring Payments Rejections job (card): one provider rejection file, handled by reason code.",
)

card_rejections_sensor = inbound_file_sensor(
    name="card_rejection_files_sensor",
    feed="card_rejections",
    job=card_rejections_job,
    partitions_def=card_rejection_files_partitions,
    description="CMP rejections daemon: watches data/inbound/card_rejections/<PROVIDER>/.",
)

defs = dg.Definitions(
    assets=flow_assets(CARD_REJECTION_ASSETS, "card_rejections"),
    asset_checks=[card_rejection_probes, card_rejections_meet_expectations],
    jobs=[card_rejections_job],
    sensors=[card_rejections_sensor],
)
