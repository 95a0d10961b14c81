"""Delivery of outbound documents and pickup of partners' files from SFTP (issue 17).

`delivery_sensor` reads the delivery register (read-only, briefly; on PostgreSQL the store itself, where every
flow registers its documents: `Database.service`) and requests a run of `deliver_documents_job`
when documents are due; its run key names the due rows and their attempts, so it asks once per state and a
document that failed asks again only once its backoff is over. The run sends through each partner's transport
(`core.transports`) and its probes alert on documents left undelivered or unconfirmed.

`sftp_pickup_sensor` requests a poll of the partners configured with SFTP pickup folders once per interval.
"""

from datetime import UTC, datetime

import dagster as dg
import duckdb
import psycopg

from cmp_pipelines.core import delivery, probe_queries
from cmp_pipelines.core.config import ConfigError, SftpTransport, load_partners, load_probes
from cmp_pipelines.core.db.connection import StoreBusyError
from cmp_pipelines.core.db.postgres import PostgresStoreError
from cmp_pipelines.core.probes import DELIVERY_PROBES, PROBES_BY_ID
from cmp_pipelines.core.settings import paths
from cmp_pipelines.core.transports import deliver_pending, pickup_inbound
from cmp_pipelines.lib.metadata import markdown_table
from cmp_pipelines.lib.probe_checks import probe_checks
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import object_store

GROUP = "delivery"
DELIVERY_INTERVAL_SECONDS = 30
PICKUP_INTERVAL_SECONDS = 60


@dg.asset(
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb", "sftp"},
    description=(
        "Sends every due document of the delivery register (PENDING, or FAILED with its backoff over) through its "
        "partner's transport (partners.yaml: a local folder or SFTP with a pinned host key; upload as .part, then "
        "rename) and records SENT, or FAILED with the error and the next attempt (at most "
        f"{delivery.MAX_ATTEMPTS} attempts; `cmp-pipelines deliveries retry` starts again)."
    ),
)
def delivered_documents(context: dg.AssetExecutionContext, database: Database) -> dg.MaterializeResult:
    p = paths()
    partners = load_partners(p.config_dir)
    report = deliver_pending(lambda: database.service(wait_seconds=60), partners, p.data_dir, p.keys_dir,
                             store=object_store())  # CMP_FILES_URL: documents, and relative folders, in the bucket
    for item, why in report.failed:
        context.log.warning(f"{item.document_kind} {item.remote_name} to {item.partner}: {why}")
    rows = [(d.partner, d.remote_name, "SENT", "") for d in report.sent]
    rows += [(d.partner, d.remote_name, "FAILED", why[:120]) for d, why in report.failed]
    return dg.MaterializeResult(metadata={
        "sent": dg.MetadataValue.int(len(report.sent)),
        "failed": dg.MetadataValue.int(len(report.failed)),
        "documents": dg.MetadataValue.md(markdown_table(["partner", "document", "status", "error"], rows)),
    })


@dg.asset(
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"sftp"},
    description=(
        "Downloads the files waiting in the SFTP pickup folders of the partners configured with them into "
        "data/inbound/<feed>/<partner>/ (temporary name, then rename), records each, then removes it remotely "
        "(or moves it into the configured processed folder); the inbound sensors take it from there."
    ),
)
def sftp_picked_up_files(context: dg.AssetExecutionContext, database: Database) -> dg.MaterializeResult:
    p = paths()
    partners = load_partners(p.config_dir)
    rows, failures = [], 0
    with database.service() as con:
        for partner in partners.values():
            for outcome in pickup_inbound(con, partner, p.data_dir, p.keys_dir, datetime.now(UTC),
                                          store=object_store()):
                if outcome.error:
                    failures += 1
                    context.log.warning(f"{partner.partner_id} pickup {outcome.remote_path}: {outcome.error}")
                rows.append((partner.partner_id, outcome.feed, outcome.remote_path, outcome.local_path or "-",
                             outcome.error or ("removed" if outcome.removed else "")))
    return dg.MaterializeResult(metadata={
        "picked_up": dg.MetadataValue.int(sum(1 for r in rows if r[3] != "-")),
        "errors": dg.MetadataValue.int(failures),
        "files": dg.MetadataValue.md(markdown_table(["partner", "feed", "remote", "local", "outcome"], rows)),
    })


delivery_probes = probe_checks("delivery_probes", DELIVERY_PROBES,
                               {probe.probe_id: delivered_documents.key for probe in DELIVERY_PROBES})

deliver_documents_job = dg.define_asset_job(
    "deliver_documents_job",
    selection=dg.AssetSelection.assets(delivered_documents),
    executor_def=dg.in_process_executor,
    description="Sends the due outbound documents to their partners and evaluates the delivery probes.",
)

sftp_pickup_job = dg.define_asset_job(
    "sftp_pickup_job",
    selection=dg.AssetSelection.assets(sftp_picked_up_files),
    executor_def=dg.in_process_executor,
    description="Polls the partners' SFTP pickup folders into the inbound folders.",
)


@dg.sensor(
    name="delivery_sensor",
    job=deliver_documents_job,
    minimum_interval_seconds=DELIVERY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a delivery run when the register holds documents due to be sent (new, or a retry whose "
                "backoff is over); the run key names them, so one state is asked for once. With nothing due but "
                "posted batches still without their posting file, one run an hour, so their probe keeps alerting.",
)
def delivery_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    database = Database()  # not a declared resource: that would open an instance on every tick (lib/inbound_sensor)
    if not database.exists():
        return dg.SkipReason("no store yet")
    now = datetime.now(UTC)
    try:
        with database.service(read_only=True, wait_seconds=2) as con:
            state = delivery.due_state(con, now)
            unfiled = None if state is not None else _posting_files_missing(context, con, now)
    except StoreBusyError:
        return dg.SkipReason("the store is busy (a run is writing); asking again next tick")
    except PostgresStoreError as exc:
        return dg.SkipReason(f"the store cannot be reached now ({exc}); asking again next tick")
    except (duckdb.CatalogException, psycopg.errors.UndefinedTable):
        return dg.SkipReason("the store has no delivery register yet (migrated by `cmp-pipelines init` or any run)")
    if state is None and unfiled:
        # nothing to send, but posted batches still lack their file: a run an hour keeps the probe's alert current
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"unfiled:{unfiled}:{now:%Y%m%d%H}")])
    if state is None:
        return dg.SkipReason("nothing to deliver")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"deliver:{state}")])


def _posting_files_missing(context: dg.SensorEvaluationContext, con, now: datetime) -> int:
    """How many batches the probe ledger_posting_files_missing counts now (the delivery run evaluates it: with
    nothing else due, no run would, and a posting file that failed would go unreported). A probes.yaml that does
    not load never stops deliveries: it is reported, and the probe's own check names the problem."""
    probe = PROBES_BY_ID["ledger_posting_files_missing"]
    try:
        configs = load_probes(paths().config_dir)
    except ConfigError as exc:
        context.log.warning(f"probes.yaml does not load, so posted batches without a file are not checked: {exc}")
        return 0
    [outcome] = probe_queries.evaluate(con, {probe.probe_id: configs[probe.probe_id]}, now, probes=(probe,))
    return outcome.value if outcome.tripped else 0


@dg.sensor(
    name="sftp_pickup_sensor",
    job=sftp_pickup_job,
    minimum_interval_seconds=PICKUP_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a poll of the partners' SFTP pickup folders once per interval, when any is configured.",
)
def sftp_pickup_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    partners = load_partners(paths().config_dir)
    polled = sorted(p.partner_id for p in partners.values()
                    if isinstance(p.transport, SftpTransport) and p.transport.pickup)
    if not polled:
        return dg.SkipReason("no partner has an SFTP pickup folder")
    bucket = int(datetime.now(UTC).timestamp()) // PICKUP_INTERVAL_SECONDS
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"pickup:{bucket}",
                                                       tags={"cmp/partners": ",".join(polled)[:200]})])
