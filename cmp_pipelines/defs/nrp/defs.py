"""The non-recurring payments flow in Dagster: assets, checks, job, sensor and schedule."""

import time

import dagster as dg

from cmp_pipelines.core.probes import NRP_DUPLICATE_PROBES, NRP_PROBES
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.nrp.assets import GROUP, NRP_ASSETS, nrp_files_partitions, nrp_payments_batch, nrp_posting_batch
from cmp_pipelines.defs.nrp.expectations import load_suite, validate_frame
from cmp_pipelines.defs.nrp.queries import batch_frame
from cmp_pipelines.lib.inbound_sensor import inbound_file_sensor
from cmp_pipelines.lib.jobs import LAST, end_of_day_schedule, group_job, probes_job
from cmp_pipelines.lib.metadata import flow_assets
from cmp_pipelines.lib.probe_checks import probe_checks
from cmp_pipelines.lib.resources.database import DB_POOL, Database

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

SUITE = "nrp_payments"


@dg.asset_check(
    asset=nrp_payments_batch,
    name="nrp_payments_meet_expectations",
    pool=DB_POOL,
    blocking=False,
    op_tags=LAST,  # after the acknowledgement: nothing waits for the suite
    description=f"Great Expectations suite expectations/{SUITE}.json over every record of the load batch.",
)
def nrp_payments_meet_expectations(context: dg.AssetCheckExecutionContext, database: Database):
    partition = context.run.tags.get("dagster/partition")
    if not partition:
        return dg.AssetCheckResult(passed=True, description="no partition in this run; nothing to validate")
    suite = load_suite(paths().expectations_dir, SUITE)
    with database.connection() as con:
        frame = batch_frame(con, partition)
    started = time.perf_counter()
    outcomes = validate_frame(frame, suite)
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if not o.success]
    rows = ["| expectation | column | success | unexpected |", "|---|---|---|---|"] + [
        f"| {o.expectation} | {o.column or ''} | {'yes' if o.success else 'NO'} | {o.unexpected_count or 0} |"
        for o in outcomes
    ]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(outcomes) - len(failed)} of {len(outcomes)} expectations met over {len(frame)} records",
        metadata={
            "suite": SUITE,
            "records": dg.MetadataValue.int(len(frame)),
            "failed_expectations": dg.MetadataValue.int(len(failed)),
            "seconds": dg.MetadataValue.float(round(elapsed, 3)),
            "results": dg.MetadataValue.md("\n".join(rows)),
        },
    )


nrp_job = group_job(
    "non_recurring_payment_job", GROUP, nrp_files_partitions,
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

defs = dg.Definitions(
    assets=flow_assets(NRP_ASSETS, "nrp"),
    asset_checks=[nrp_probes, nrp_duplicate_probes, nrp_payments_meet_expectations],
    jobs=[nrp_job, nrp_probes_job],
    sensors=[nrp_inbound_files_sensor],
    schedules=[nrp_end_of_day_probes_schedule],
)
