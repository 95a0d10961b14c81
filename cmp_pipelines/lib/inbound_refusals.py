"""Entries the inbound sensors refuse (symbolic links, FIFOs, sockets, devices, names the store cannot keep).

A sensor never touches the store, so it requests one run of `inbound_refusals_job` per refused entry (its run
key names the entry, so each is reported once): the run records a job error and the `inbound_entries_refused`
alert probe e-mails its recipients. The entry itself stays where it is for an operator to inspect.
"""

from datetime import UTC, datetime

import dagster as dg

from cmp_pipelines.core.inbound import record_refusal
from cmp_pipelines.core.probes import INBOUND_PROBES
from cmp_pipelines.lib.probe_checks import probe_checks
from cmp_pipelines.lib.resources.database import DB_POOL, Database

GROUP = "inbound_refusals"
FEED_TAG, ENTRY_TAG, REFUSED_TAG = "cmp/feed", "cmp/inbound_file", "cmp/refused"


@dg.asset(
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "An entry an inbound sensor refused and left in place (a symbolic link, FIFO, socket or device, or a "
        "name the store cannot keep), recorded in job_errors (category INBOUND_REFUSED) from the run's tags."
    ),
)
def inbound_refused_entries(context: dg.AssetExecutionContext, database: Database) -> dg.MaterializeResult:
    tags = context.run.tags
    feed, entry, why = tags.get(FEED_TAG), tags.get(ENTRY_TAG), tags.get(REFUSED_TAG)
    if not (feed and entry and why):
        raise dg.Failure(description="inbound_refused_entries records an entry an inbound sensor refused; it runs "
                                     f"from the sensor's request, whose tags {FEED_TAG}, {ENTRY_TAG} and "
                                     f"{REFUSED_TAG} name it")
    with database.service() as con:  # on PostgreSQL the store itself (a job error kept with the others)
        record_refusal(con, feed, entry, why, datetime.now(UTC))
    context.log.warning(f"refused {entry}: {why}")
    return dg.MaterializeResult(metadata={"feed": feed, "entry": entry, "reason": why})


inbound_probes = probe_checks(
    "inbound_probes", INBOUND_PROBES, {p.probe_id: inbound_refused_entries.key for p in INBOUND_PROBES}
)

inbound_refusals_job = dg.define_asset_job(
    "inbound_refusals_job",
    selection=dg.AssetSelection.assets(inbound_refused_entries),
    executor_def=dg.in_process_executor,
    description="Records an inbound entry a sensor refused and evaluates the Inbound Entries Refused alert probe.",
)
