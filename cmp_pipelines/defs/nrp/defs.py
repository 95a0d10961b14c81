"""The non-recurring payments flow in Dagster: assets, checks, job, sensor and schedule."""

import dagster as dg

from cmp_pipelines.core.probes import NRP_DUPLICATE_PROBES, NRP_PROBES
from cmp_pipelines.defs.nrp.assets import GROUP, NRP_ASSETS, nrp_files_partitions, nrp_payments_batch, nrp_posting_batch
from cmp_pipelines.defs.nrp.queries import NRP_SUITE
from cmp_pipelines.lib.expectation_check import expectation_check
from cmp_pipelines.lib.inbound_sensor import inbound_file_sensor
from cmp_pipelines.lib.jobs import end_of_day_schedule, group_job, probes_job
from cmp_pipelines.lib.metadata import flow_assets
from cmp_pipelines.lib.probe_checks import probe_checks

_LOAD_PROBES = {"nrp_load_completed", "nrp_verification_payments_supplied"}

nrp_probes = probe_checks(
    "nrp_probes",
    NRP_PROBES,
    {p.probe_id: (nrp_payments_batch.key if p.probe_id in _LOAD_PROBES else nrp_posting_batch.key)
     for p in NRP_PROBES},
)

# Records held as suspected duplicates of an earlier file (issue 18 item 6): a check of its own, so the eight
# CMP probes above stay exactly the product's.
nrp_duplicate_probes = probe_checks(
    "nrp_duplicate_probes", NRP_DUPLICATE_PROBES, {p.probe_id: nrp_posting_batch.key for p in NRP_DUPLICATE_PROBES}
)

nrp_payments_meet_expectations = expectation_check(
    asset=nrp_payments_batch, name="nrp_payments_meet_expectations", spec=NRP_SUITE, feed="non-recurring payments")


nrp_job = group_job(
    "non_recurring_payment_job", GROUP, nrp_files_partitions,
    "CMP Non Recurring Payment job: load, match, post, then the acknowledgement and the ledger file of one file.",
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

defs = dg.Definitions(
    assets=flow_assets(NRP_ASSETS, "nrp"),
    asset_checks=[nrp_probes, nrp_duplicate_probes, nrp_payments_meet_expectations],
    jobs=[nrp_job, nrp_probes_job],
    sensors=[nrp_inbound_files_sensor],
    schedules=[nrp_end_of_day_probes_schedule],
)
