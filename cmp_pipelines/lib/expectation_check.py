"""The data-quality asset check of an inbound feed: its Great Expectations suite over every record of the load
batch of the run's file, reported on the feed's load asset (issue 21 item 8: every inbound feed has one).

It runs after the acknowledgement (`LAST`) and never blocks: a failed expectation is a WARN for the operator to
look at, the records themselves were already judged record by record by the flow's rules.
"""

import time

import dagster as dg

from cmp_pipelines.core.expectations import RecordsSuite, load_suite, records_frame, validate_frame
from cmp_pipelines.core.settings import paths
from cmp_pipelines.lib.jobs import LAST
from cmp_pipelines.lib.resources.database import DB_POOL, Database


def expectation_check(*, asset, name: str, spec: RecordsSuite, feed: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name=name,
        pool=DB_POOL,
        blocking=False,
        op_tags=LAST,  # after the acknowledgement: nothing waits for the suite
        description=f"Great Expectations suite expectations/{spec.suite}.json over every record of the {feed} "
                    f"file's load batch ({spec.table}).",
    )
    def _check(context: dg.AssetCheckExecutionContext, database: Database) -> dg.AssetCheckResult:
        partition = context.run.tags.get("dagster/partition")
        if not partition:
            return dg.AssetCheckResult(passed=True, description="no partition in this run; nothing to validate")
        suite = load_suite(paths().expectations_dir, spec.suite)
        with database.connection() as con:
            frame = records_frame(con, spec, partition)
        if frame.empty:  # a quarantined file has no records; its run already failed and said why
            return dg.AssetCheckResult(passed=True, description="no records loaded from this file; nothing to validate",
                                       metadata={"suite": spec.suite, "records": dg.MetadataValue.int(0)})
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
            description=f"{len(outcomes) - len(failed)} of {len(outcomes)} expectations met over {len(frame)} records"
                        + (": " + ", ".join(f"{o.expectation}({o.column or ''})" for o in failed) if failed else ""),
            metadata={
                "suite": spec.suite,
                "records": dg.MetadataValue.int(len(frame)),
                "failed_expectations": dg.MetadataValue.int(len(failed)),
                "seconds": dg.MetadataValue.float(round(elapsed, 3)),
                "results": dg.MetadataValue.md("\n".join(rows)),
            },
        )

    return _check
