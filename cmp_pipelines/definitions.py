"""The one Dagster code location: assets, checks, jobs, sensors, schedules and resources."""

from __future__ import annotations

import dagster as dg

from cmp_pipelines.assets.bacs_reports import (
    ADDACS_ASSETS,
    ADDACS_GROUP,
    ARUDD_ASSETS,
    ARUDD_GROUP,
    addacs_files_partitions,
    arudd_files_partitions,
)
from cmp_pipelines.assets.card_rejections import CARD_REJECTION_ASSETS, card_rejection_files_partitions
from cmp_pipelines.assets.card_rejections import GROUP as CARD_REJECTIONS_GROUP
from cmp_pipelines.assets.direct_debit import (
    COLLECTIONS_GROUP,
    DD_COLLECTION_ASSETS,
    DIRECT_DEBIT_ASSETS,
    auddis_days_partitions,
    dd_collection_days_partitions,
)
from cmp_pipelines.assets.direct_debit import GROUP as DIRECT_DEBIT_GROUP
from cmp_pipelines.assets.inbound_refusals import inbound_probes, inbound_refusals_job, inbound_refused_entries
from cmp_pipelines.assets.non_recurring import GROUP as NRP_GROUP
from cmp_pipelines.assets.non_recurring import NRP_ASSETS, nrp_files_partitions
from cmp_pipelines.assets.one_off import ONE_OFF_ASSETS, api_sync_job
from cmp_pipelines.assets.recurring_card import CARD_PAYMENT_ASSETS, card_payment_days_partitions
from cmp_pipelines.assets.recurring_card import GROUP as CARD_PAYMENTS_GROUP
from cmp_pipelines.checks.card_probes import card_payment_probes, card_rejection_probes
from cmp_pipelines.checks.dd_probes import addacs_probes, arudd_probes, auddis_probes, dd_collection_probes
from cmp_pipelines.checks.nrp_expectations import nrp_payments_meet_expectations
from cmp_pipelines.checks.nrp_probes import nrp_duplicate_probes, nrp_probes
from cmp_pipelines.definitions_hardware import (
    HARDWARE_JOBS,
    HARDWARE_ORDER_ASSETS,
    HARDWARE_PROBE_CHECKS,
    HARDWARE_RESOURCES,
    HARDWARE_SCHEDULES,
    HARDWARE_SENSORS,
)
from cmp_pipelines.job_factories import daily_schedule, end_of_day_schedule, group_job, probes_job
from cmp_pipelines.resources.cipher import PartnerCipher
from cmp_pipelines.resources.database import Database
from cmp_pipelines.resources.file_store import LocalFileStore
from cmp_pipelines.resources.notifier import Notifier
from cmp_pipelines.resources.payment_provider_resource import PaymentProviderResource
from cmp_pipelines.sensors.inbound import inbound_file_sensor
from cmp_pipelines.sensors.ledger_monitor import ledger_monitor_sensor
from cmp_pipelines.sensors.recovery import run_recovery_sensor

nrp_job = group_job(
    "non_recurring_payment_job", NRP_GROUP, nrp_files_partitions,
    "CMP Non Recurring Payment job: load, match, post, ledger file and acknowledgement of one file.",
)

nrp_probes_job = probes_job(
    "non_recurring_payment_probes_job", [nrp_probes, nrp_duplicate_probes],
    "Evaluates the non-recurring payments probes without materialising anything.",
)

nrp_end_of_day_probes_schedule = end_of_day_schedule(
    "nrp_end_of_day_probes_schedule", nrp_probes_job, "55 23 * * *",
    "End of day: the 'today' probes (Load Completed, Batch Completed, ...) run even with no file.",
)

nrp_inbound_files_sensor = inbound_file_sensor(
    name="nrp_inbound_files_sensor",
    feed="nrp",
    job=nrp_job,
    partitions_def=nrp_files_partitions,
    description="CMP daemon 'Load Non Recurring Payments From Generic Format': watches data/inbound/nrp/<PARTNER>/.",
)

card_payments_job = group_job(
    "recurring_payments_card_job", CARD_PAYMENTS_GROUP, card_payment_days_partitions,
    "CMP Recurring Payments job in CARD mode: the day's due payments and refunds, extract, postings.",
)

card_payments_daily_schedule = daily_schedule(
    "recurring_payments_card_daily_schedule", card_payments_job, hour=2, minute=0,
    description="Daily at 02:00 UTC: what is due by today goes to the card provider.",
)

card_rejections_job = group_job(
    "recurring_payments_rejections_card_job", CARD_REJECTIONS_GROUP, card_rejection_files_partitions,
    "CMP Recurring Payments Rejections job (card): one provider rejection file, handled by reason code.",
)

card_rejections_sensor = inbound_file_sensor(
    name="card_rejection_files_sensor",
    feed="card_rejections",
    job=card_rejections_job,
    partitions_def=card_rejection_files_partitions,
    description="CMP rejections daemon: watches data/inbound/card_rejections/<PROVIDER>/.",
)

auddis_job = group_job(
    "auddis_extract_job", DIRECT_DEBIT_GROUP, auddis_days_partitions,
    "CMP AUDDIS extract: the day's new, amended and cancelled Direct Debit Instructions (Standard 18).",
)

auddis_daily_schedule = daily_schedule(
    "auddis_extract_daily_schedule", auddis_job, hour=1, minute=30,
    description="Daily at 01:30 UTC: the day's AUDDIS file for the bureau.",
)

dd_collections_job = group_job(
    "recurring_payments_dd_job", COLLECTIONS_GROUP, dd_collection_days_partitions,
    "CMP Recurring Payments job in DD mode: the day's debits as a Standard 18 file, and their postings.",
)

dd_collections_daily_schedule = daily_schedule(
    "recurring_payments_dd_daily_schedule", dd_collections_job, hour=2, minute=15,
    description="Daily at 02:15 UTC: what is due from direct-debit accounts goes to the bureau.",
)

addacs_job = group_job(
    "addacs_job", ADDACS_GROUP, addacs_files_partitions,
    "CMP ADDACS processing: one bank report of mandate amendments and cancellations.",
)

addacs_sensor = inbound_file_sensor(
    name="addacs_files_sensor",
    feed="addacs",
    job=addacs_job,
    partitions_def=addacs_files_partitions,
    description="CMP ADDACS daemon: watches data/inbound/addacs/<BUREAU>/.",
)

arudd_job = group_job(
    "recurring_payments_rejections_dd_job", ARUDD_GROUP, arudd_files_partitions,
    "CMP Recurring Payments Rejections job (direct debit): one ARUDD report of returned debits.",
)

arudd_sensor = inbound_file_sensor(
    name="arudd_files_sensor",
    feed="arudd",
    job=arudd_job,
    partitions_def=arudd_files_partitions,
    description="CMP rejections daemon (direct debit): watches data/inbound/arudd/<BUREAU>/.",
)

RECOVERABLE_JOBS = [nrp_job, card_payments_job, card_rejections_job, auddis_job, dd_collections_job, addacs_job,
                    arudd_job, *(job for job in HARDWARE_JOBS if job.partitions_def is not None)]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The code location; tests pass `resources` to swap a backend (e.g. a file store that fails on cue)."""
    return dg.Definitions(
        assets=[inbound_refused_entries, *NRP_ASSETS, *CARD_PAYMENT_ASSETS, *CARD_REJECTION_ASSETS,
                *DIRECT_DEBIT_ASSETS, *DD_COLLECTION_ASSETS, *ADDACS_ASSETS, *ARUDD_ASSETS, *HARDWARE_ORDER_ASSETS,
                *ONE_OFF_ASSETS],
        asset_checks=[inbound_probes, nrp_probes, nrp_duplicate_probes, nrp_payments_meet_expectations,
                      card_payment_probes, card_rejection_probes,
                      auddis_probes, dd_collection_probes, addacs_probes, arudd_probes, *HARDWARE_PROBE_CHECKS],
        jobs=[inbound_refusals_job, nrp_job, nrp_probes_job, card_payments_job, card_rejections_job, auddis_job,
              dd_collections_job, addacs_job, arudd_job, *HARDWARE_JOBS, api_sync_job],
        sensors=[nrp_inbound_files_sensor, card_rejections_sensor, addacs_sensor, arudd_sensor, *HARDWARE_SENSORS,
                 ledger_monitor_sensor(api_sync_job), run_recovery_sensor(RECOVERABLE_JOBS)],
        schedules=[nrp_end_of_day_probes_schedule, card_payments_daily_schedule, auddis_daily_schedule,
                   dd_collections_daily_schedule, *HARDWARE_SCHEDULES],
        executor=dg.in_process_executor,  # a step in another process would name itself as the run's process
        resources={
            "database": Database(),
            "file_store": LocalFileStore(),
            "cipher": PartnerCipher(),
            "notifier": Notifier(),
            **HARDWARE_RESOURCES,
            "payment_provider": PaymentProviderResource(),
            **(resources or {}),
        },
    )


defs = build_definitions()
