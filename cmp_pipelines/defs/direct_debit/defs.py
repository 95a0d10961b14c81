"""The direct debit flow in Dagster: AUDDIS, collections, ADDACS and ARUDD; their probes, jobs, sensors, schedules."""

import dagster as dg

from cmp_pipelines.core.expectations import RecordsSuite
from cmp_pipelines.core.probes import PROBES_BY_ID
from cmp_pipelines.defs.direct_debit.assets import (
    COLLECTIONS_GROUP,
    DD_COLLECTION_ASSETS,
    DIRECT_DEBIT_ASSETS,
    GROUP,
    auddis_days_partitions,
    auddis_file,
    dd_collection_days_partitions,
    dd_collection_notices,
    dd_collection_posting_batch,
)
from cmp_pipelines.defs.direct_debit.report_assets import (
    ADDACS_ASSETS,
    ADDACS_GROUP,
    ARUDD_ASSETS,
    ARUDD_GROUP,
    addacs_advices,
    addacs_files_partitions,
    arudd_files_partitions,
    dd_returns_batch,
)
from cmp_pipelines.lib.expectation_check import expectation_check
from cmp_pipelines.lib.inbound_sensor import inbound_file_sensor
from cmp_pipelines.lib.jobs import daily_schedule, end_of_day_schedule, group_job, probes_job
from cmp_pipelines.lib.metadata import flow_assets
from cmp_pipelines.lib.probe_checks import probe_checks

auddis_probes = probe_checks(
    "auddis_probes", (PROBES_BY_ID["auddis_file_produced"],), {"auddis_file_produced": auddis_file.key})

dd_collection_probes = probe_checks(
    "dd_collection_probes", (PROBES_BY_ID["dd_collection_totals_mismatch"], PROBES_BY_ID["dd_advance_notices_unsent"]),
    {"dd_collection_totals_mismatch": dd_collection_posting_batch.key,
     "dd_advance_notices_unsent": dd_collection_notices.key})

addacs_probes = probe_checks(
    "addacs_probes", (PROBES_BY_ID["addacs_unknown_references"],),
    {"addacs_unknown_references": addacs_advices.key})

arudd_probes = probe_checks(
    "arudd_probes", (PROBES_BY_ID["arudd_return_rate"], PROBES_BY_ID["arudd_unmapped_return_codes"]),
    {"arudd_return_rate": dd_returns_batch.key, "arudd_unmapped_return_codes": dd_returns_batch.key})

addacs_advices_meet_expectations = expectation_check(
    asset=addacs_advices, name="addacs_advices_meet_expectations", feed="ADDACS",
    spec=RecordsSuite("addacs_advices", "addacs_advices",
                      ("reference", "reason_code", "effective_date", "new_sort_code", "new_account_number",
                       "mandate_id")))

arudd_returns_meet_expectations = expectation_check(
    asset=dd_returns_batch, name="arudd_returns_meet_expectations", feed="ARUDD",
    spec=RecordsSuite("arudd_returns", "dd_returns",
                      ("reference", "transaction_code", "return_code", "amount_minor", "currency",
                       "original_processing_date", "collection_id")))

auddis_job = group_job(
    "auddis_extract_job", GROUP, auddis_days_partitions,
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

direct_debit_probes_job = probes_job(
    "direct_debit_probes_job", [auddis_probes, dd_collection_probes],
    "Evaluates the AUDDIS 'file produced today' and collection totals probes without materialising anything.",
)

direct_debit_probes_schedule = end_of_day_schedule(
    "direct_debit_probes_schedule", direct_debit_probes_job, "0 6 * * *",
    "06:00 UTC, after the 01:30 AUDDIS and 02:15 collection runs: 'AUDDIS File Produced' alerts even when the "
    "job never ran.",
)

defs = dg.Definitions(
    assets=flow_assets([*DIRECT_DEBIT_ASSETS, *DD_COLLECTION_ASSETS, *ADDACS_ASSETS, *ARUDD_ASSETS], "direct_debit"),
    asset_checks=[auddis_probes, dd_collection_probes, addacs_probes, arudd_probes, addacs_advices_meet_expectations,
                  arudd_returns_meet_expectations],
    jobs=[auddis_job, dd_collections_job, addacs_job, arudd_job, direct_debit_probes_job],
    sensors=[addacs_sensor, arudd_sensor],
    schedules=[auddis_daily_schedule, dd_collections_daily_schedule, direct_debit_probes_schedule],
)
