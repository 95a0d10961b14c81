"""The recurring card payments flow in Dagster: the day's extract and postings, their probes, job and schedule."""

import dagster as dg

from cmp_pipelines.core.probes import PROBES_BY_ID
from cmp_pipelines.defs.card_payments.assets import (
    CARD_PAYMENT_ASSETS,
    GROUP,
    card_payment_days_partitions,
    card_payment_extract,
    card_payment_notices,
    card_payment_posting_batch,
)
from cmp_pipelines.lib.jobs import daily_schedule, end_of_day_schedule, group_job, probes_job
from cmp_pipelines.lib.metadata import flow_assets
from cmp_pipelines.lib.probe_checks import probe_checks

card_payment_probes = probe_checks(
    "card_payment_probes",
    (PROBES_BY_ID["card_extract_produced"], PROBES_BY_ID["card_extract_totals_mismatch"],
     PROBES_BY_ID["card_advance_notices_unsent"]),
    {"card_extract_produced": card_payment_extract.key,
     "card_extract_totals_mismatch": card_payment_posting_batch.key,
     "card_advance_notices_unsent": card_payment_notices.key},
)

card_payments_job = group_job(
    "recurring_payments_card_job", GROUP, card_payment_days_partitions,
    "CMP Recurring Payments job in CARD mode: the day's due payments and refunds, extract, postings.",
)

card_payments_daily_schedule = daily_schedule(
    "recurring_payments_card_daily_schedule", card_payments_job, hour=2, minute=0,
    description="Daily at 02:00 UTC: what is due by today goes to the card provider.",
)

card_payment_probes_job = probes_job(
    "recurring_payments_card_probes_job", [card_payment_probes],
    "Evaluates the card extract probes (produced today, totals, notices not sent) without materialising anything.",
)

card_payment_probes_schedule = end_of_day_schedule(
    "recurring_payments_card_probes_schedule", card_payment_probes_job, "0 6 * * *",
    "06:00 UTC, after the 02:00 extract: 'Card Extract Produced' alerts even when the job never ran.",
)

defs = dg.Definitions(
    assets=flow_assets(CARD_PAYMENT_ASSETS, "card_payments"),
    asset_checks=[card_payment_probes],
    jobs=[card_payments_job, card_payment_probes_job],
    schedules=[card_payments_daily_schedule, card_payment_probes_schedule],
)
