"""The Great Expectations suite of the non-recurring payments feed, bridged into a Dagster asset check."""


import time

import dagster as dg

from cmp_pipelines.assets.non_recurring import nrp_payments_batch
from cmp_pipelines.resources.database import DB_POOL, Database
from cmp_pipelines.services.expectations import load_suite, validate_frame
from cmp_pipelines.settings import paths
from cmp_pipelines.store.nrp_records import batch_frame

SUITE = "nrp_payments"


@dg.asset_check(
    asset=nrp_payments_batch,
    name="nrp_payments_meet_expectations",
    pool=DB_POOL,
    blocking=False,
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
