"""Reaching people: the workflow dispatcher (events -> actions, quarantine alerts, the e-mail outbox) and the
run-failure alert sensor.

The dispatcher is a job a sensor starts when there is work (new or due events, due messages, a quarantined file
not yet alerted), so the store is written under the `cmp_db` pool like every other step and two dispatchers never
run at once; the sensor itself only reads. On PostgreSQL both work on the store itself (`Database.service`), and
the pass holds an advisory lock (core/dispatcher.run_dispatcher), so two dispatchers still never overlap.
"""

from datetime import UTC, datetime

import dagster as dg

from cmp_pipelines.core import alerts
from cmp_pipelines.core.cards import mask_pans_in
from cmp_pipelines.core.config_workflow import load_alerts
from cmp_pipelines.core.db.connection import StoreBusyError
from cmp_pipelines.core.db.postgres import PostgresStoreError
from cmp_pipelines.core.dispatcher import run_dispatcher
from cmp_pipelines.core.settings import paths
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.notifier import Notifier
from cmp_pipelines.lib.sensor_instance import sensor_instance

QUARANTINE_PREFIX = "File quarantined"


@dg.op(pool=DB_POOL, description="Carries out the configured action of every new workflow event exactly once, "
                                 "queues quarantine alerts and delivers the e-mails due.")
def dispatch_workflow_events(context: dg.OpExecutionContext, database: Database, notifier: Notifier) -> dg.Output:
    with database.service() as con:  # on PostgreSQL the store itself, the pass under an advisory lock
        summary = run_dispatcher(con, paths().config_dir, notifier.smtp(), datetime.now(UTC))
    context.log.info(f"dispatch: {summary}")
    return dg.Output(None, metadata={k: dg.MetadataValue.json(v) if isinstance(v, dict) else dg.MetadataValue.int(v)
                                     for k, v in summary.items()})


@dg.job(name="workflow_dispatch_job", executor_def=dg.in_process_executor,
        description="CMP workflow actions: customer communications, webhooks and operator tasks for new workflow "
                    "events; alerts for quarantined files; delivery (and retries) of queued e-mails.")
def workflow_dispatch_job():
    dispatch_workflow_events()


_WORK_SQL = """
SELECT (SELECT count(*) FROM workflow_events e
        WHERE NOT EXISTS (SELECT 1 FROM workflow_dispatch d WHERE d.event_id = e.event_id))
     + (SELECT count(*) FROM workflow_dispatch WHERE status = 'PENDING' AND next_attempt_at <= $now)
     + (SELECT count(*) FROM email_outbox WHERE status = 'PENDING' AND next_attempt_at <= $now)
     + (SELECT count(*) FROM inbound_files f WHERE f.status = 'QUARANTINED' AND NOT EXISTS (
            SELECT 1 FROM email_outbox o WHERE o.kind = 'ALERT' AND o.source_ref = 'quarantine:' || f.file_id))
"""

_ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
           dg.DagsterRunStatus.STARTED]


def pending_work(database: Database, now: datetime) -> int:
    with database.service(read_only=True, wait_seconds=2) as con:
        return int(con.execute(_WORK_SQL, {"now": now}).fetchone()[0])


@dg.sensor(name="workflow_dispatch_sensor", job=workflow_dispatch_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts workflow_dispatch_job when events, e-mails or quarantine alerts are waiting and no "
                       "dispatcher run is queued or running.")
def workflow_dispatch_sensor(context: dg.SensorEvaluationContext):
    database = Database()  # not a declared resource: that would open an instance on every tick (lib/inbound_sensor)
    if not database.exists():
        return dg.SkipReason("no store yet (cmp-pipelines init)")
    try:
        waiting = pending_work(database, datetime.now(UTC)) + len(alerts.spooled_failures())
    except StoreBusyError:
        return dg.SkipReason("the store is busy; looking again at the next tick")
    except PostgresStoreError as exc:
        return dg.SkipReason(f"the store cannot be reached now ({exc}); looking again at the next tick")
    if not waiting:
        return dg.SkipReason("nothing to dispatch")
    active = sensor_instance(context).get_runs(
        dg.RunsFilter(job_name=workflow_dispatch_job.name, statuses=_ACTIVE), limit=1)
    if active:
        return dg.SkipReason(f"{waiting} item(s) waiting; dispatcher run {active[0].run_id} is on it")
    return dg.RunRequest(tags={"cmp/waiting": str(waiting)})


def _innermost(error) -> str:
    """The error a step raised, not Dagster's 'Error occurred while executing op' wrapper around it."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failure_text(context: dg.RunFailureSensorContext) -> str:
    steps = [f"{e.step_key}: " + (_innermost(e.event_specific_data.error) if e.event_specific_data
                                  and e.event_specific_data.error else (e.message or "failed"))
             for e in context.get_step_failure_events()]
    text = "\n".join(steps) if steps else (context.failure_event.message or "the run failed")
    return mask_pans_in(text)


@dg.run_failure_sensor(name="run_failure_alert_sensor", default_status=dg.DefaultSensorStatus.RUNNING,
                       minimum_interval_seconds=30,
                       description="Spools an alert to the feed's recipients (config/alerts.yaml) when a run fails "
                                   "(on PostgreSQL: queues it in the store's outbox); the dispatcher sends it. A "
                                   "quarantined file is alerted by the dispatcher instead, with its reason.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    text = failure_text(context)
    if QUARANTINE_PREFIX in text:
        return dg.SkipReason(f"run {run.run_id} failed on a quarantined file: the quarantine alert covers it")
    failure = {"run_id": run.run_id, "job_name": run.job_name, "feed": run.tags.get("cmp/feed"),
               "partition": run.tags.get("dagster/partition"), "error": text, "now": datetime.now(UTC)}
    database = Database()  # not a declared resource: that would open an instance on every tick (lib/inbound_sensor)
    if database.on_postgres():
        # runs execute on other machines (Celery workers, pods): a spool on this machine's disk would never be
        # drained by the dispatcher's run, so the alert is queued in the store itself (no single-writer lock here)
        with database.service(wait_seconds=10) as con:
            alerts.queue_run_failure(con, load_alerts(paths().config_dir), alerts.run_failure(**failure),
                                     failure["now"])
        context.log.info(f"run {run.run_id} failed: alert queued in the outbox for the dispatcher")
        return None
    path = alerts.spool_run_failure(**failure)
    context.log.info(f"run {run.run_id} failed: alert spooled at {path} for the dispatcher")
    return None
