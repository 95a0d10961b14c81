"""The Ledger Monitor sensor: starts `api_sync_job` when the API store has work for the main store, or when
the main store changed after the API's read model was published (another run posted, so balances moved).

A tick reads only the API's SQLite files and the main store's file times, never `cmp.duckdb` itself: it never
waits on a run that holds the store. The work happens in the job, which queues in pool `cmp_db`.

A republish alone waits until no other run is queued or under way: a backlog of partner files ends with one
publish, not one `api_sync_job` run after each file (issue 16), and balances are never published half-way
through a queue that is about to move them again.
"""

from datetime import UTC, datetime

import dagster as dg

from cmp_pipelines.core.config_payments import load_provider_settings
from cmp_pipelines.core.db.api_store import ReadModel, api_store_path, open_api_store
from cmp_pipelines.core.settings import paths, store
from cmp_pipelines.defs.one_off import flow as one_off
from cmp_pipelines.lib.inbound_sensor import PICKUP_SECONDS
from cmp_pipelines.lib.sensor_instance import sensor_instance


def read_model_behind() -> str | None:
    """The main store's last change time when it is newer than the read model; None when current or unused."""
    published = None if store().backend == "postgres" else ReadModel().published_at()
    if published is None:
        return None  # no API has published here: nothing to keep fresh
    db = paths().database
    changed = max((f.stat().st_mtime for f in (db, db.with_name(db.name + ".wal")) if f.exists()), default=0.0)
    return f"{changed:.0f}" if changed > datetime.fromisoformat(published).timestamp() + 1 else None


_UNDER_WAY = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]


def runs_under_way(instance: dg.DagsterInstance | None) -> int:
    if instance is None:
        return 0
    return instance.get_runs_count(dg.RunsFilter(statuses=_UNDER_WAY))


def work_key(now: datetime, instance: dg.DagsterInstance | None = None) -> str | None:
    """A run key naming the work waiting in the API's records, or None when there is none. On PostgreSQL there is
    no read model to keep fresh and nothing is ever queued: only final payments and overdue outcomes count."""
    behind = read_model_behind()
    if behind and runs_under_way(instance):
        behind = None  # publish once the queue has drained
    if store().backend != "postgres" and not api_store_path().exists():
        return f"ledger-monitor:publish:{behind}" if behind else None
    api = open_api_store(pool_size=1)
    try:
        due, newest = one_off.due_count(api)
        stale = len(one_off.stale(api, load_provider_settings(paths().config_dir), now))
        queued = api.queued()
    finally:
        api.close()
    if not (due or stale or queued[0]):
        return f"ledger-monitor:publish:{behind}" if behind else None
    # the same work gets a new key every few minutes: a failed run, or an outcome the provider could not give
    # yet, is tried again then, not on every tick
    bucket = f"{now:%Y%m%d%H}{now.minute // 5:02d}"
    return f"ledger-monitor:{due}:{newest}:{stale}:{queued[0]}:{queued[1]}:{bucket}"


def ledger_monitor_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(name="ledger_monitor_sensor", job=job, minimum_interval_seconds=PICKUP_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="CMP Ledger Monitor: new final one-off payments, overdue provider outcomes or queued "
                           "set-up requests in the API store, or a main store newer than the API's read model, "
                           "start api_sync_job.")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        key = work_key(datetime.now(UTC), sensor_instance(context))
        if key is None:
            return dg.SensorResult(skip_reason="nothing waiting in the API store")
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=key)])

    return _sensor
