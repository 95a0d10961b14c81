"""The recovery sensor: dead runs are failed and their partitions run again (see `cmp_pipelines.lib.recovery`)."""

from datetime import UTC, datetime

import dagster as dg

from cmp_pipelines.core.settings import sweep_scratch
from cmp_pipelines.lib.recovery import RECOVERY_SENSOR, reap_dead_runs, recovery_requests
from cmp_pipelines.lib.resources.database import Database
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from cmp_pipelines.lib.sensor_instance import sensor_instance


def run_recovery_sensor(jobs: list, interval_seconds: int = 30) -> dg.SensorDefinition:
    names = [job.name for job in jobs]

    @dg.sensor(
        name=RECOVERY_SENSOR,
        jobs=jobs,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Fails runs whose process died (kill -9, power cut) and frees their slots, removes the scratch and "
            "half-written files they left, and runs each such partition again once (at most "
            "3 times), so a batch whose steps did not all finish is driven to the end exactly once."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        # not declared resources: those would open an instance on every tick (lib/inbound_sensor)
        database = Database()
        for run_id in reap_dead_runs(sensor_instance(context)):
            context.log.warning(f"run {run_id}: its process is gone; marked failed, slots freed")
        try:  # a sweep that fails (a permission, a file in use) must not stop recovery
            for path in sweep_scratch():
                context.log.warning(f"removed the scratch of a dead process: {path}")
            for path in LocalFileStore().sweep_parts():
                context.log.warning(f"removed a half-written file of a dead process: {path}")
        except OSError as exc:
            context.log.error(f"sweeping what dead processes left failed: {exc}")
        requests, gave_up = recovery_requests(sensor_instance(context), names)
        if gave_up:
            with database.service(wait_seconds=5) as con:  # on PostgreSQL the store itself
                for item in gave_up:
                    detail = (f"{item.job_name} partition {item.partition_key}: runs keep dying (last {item.run_id}); "
                              "not retried again - look at the run's logs and re-execute it from the UI")
                    known = con.execute("SELECT 1 FROM job_errors WHERE job = ? AND source_ref = ?",
                                        [item.job_name, item.run_id]).fetchone()
                    if not known:
                        con.execute("INSERT INTO job_errors (job, category, source_ref, detail, raised_at) "
                                    "VALUES (?, 'RECOVERY', ?, ?, ?)",
                                    [item.job_name, item.run_id, detail, datetime.now(UTC)])
                    context.log.error(detail)
        return dg.SensorResult(run_requests=requests)

    return _sensor
