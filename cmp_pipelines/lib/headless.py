"""Running the platform without the daemon: evaluate each sensor and execute its runs in this process.

The runs go into the persistent instance ($DAGSTER_HOME), so the UI lists them like the daemon's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from cmp_pipelines.lib.recovery import process_tags, reap_dead_runs, recovered


@dataclass
class RunOutcome:
    sensor: str
    partition_key: str | None
    run_id: str
    success: bool
    error: str | None


def _already_requested(instance: dg.DagsterInstance, run_key: str) -> bool:
    """True when a run for this key succeeded or is still under way, or the recovery sensor already ran its
    partition again; a key whose runs all failed is retried."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}))
    finished_badly = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    if any(run.status not in finished_badly for run in runs):
        return True
    return recovered(instance, [run.run_id for run in runs])


def run_pending_sensors(
    definitions: dg.Definitions | None = None,
    instance: dg.DagsterInstance | None = None,
    max_ticks: int = 100,
    echo: Callable[[str], None] = print,
) -> list[RunOutcome]:
    if definitions is None:
        from cmp_pipelines.definitions import defs as definitions
    own_instance = instance is None
    instance = instance or dg.DagsterInstance.get()
    outcomes: list[RunOutcome] = []
    try:
        reap_dead_runs(instance)  # a run this command left when it was killed no longer looks under way
        repository = definitions.get_repository_def()
        for sensor in repository.sensor_defs:
            cursor = None
            for _ in range(max_ticks):
                context = dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources=repository.get_top_level_resources(),
                    repository_def=repository,
                )
                result = sensor(context)
                for request in result.dynamic_partitions_requests or []:
                    instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
                requests = result.run_requests or []
                cursor = result.cursor
                if not requests:
                    break
                for request in requests:
                    if request.run_key and _already_requested(instance, request.run_key):
                        continue
                    job = repository.get_job(request.job_name or sensor.job_name)
                    run_id = str(uuid.uuid4())
                    tags = {**(request.tags or {}), "dagster/sensor_name": sensor.name, **process_tags(run_id)}
                    if request.run_key:
                        tags["dagster/run_key"] = request.run_key
                    run = job.execute_in_process(
                        instance=instance, partition_key=request.partition_key, tags=tags, raise_on_error=False,
                        run_id=run_id,
                        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                    )
                    error = _run_error(run)
                    outcome = RunOutcome(sensor.name, request.partition_key, run.run_id, run.success, error)
                    outcomes.append(outcome)
                    echo(f"{'ok    ' if run.success else 'FAILED'} {sensor.name} {request.partition_key}"
                         + (f"\n       {error}" if error else ""))
    finally:
        if own_instance:
            instance.dispose()
    return outcomes


def run_partition(
    job_name: str, partition_key: str, definitions: dg.Definitions | None = None,
    instance: dg.DagsterInstance | None = None,
) -> RunOutcome:
    """One partition of a job, executed here and recorded in the instance (what a schedule tick would run)."""
    if definitions is None:
        from cmp_pipelines.definitions import defs as definitions
    own_instance = instance is None
    instance = instance or dg.DagsterInstance.get()
    try:
        reap_dead_runs(instance)
        job = definitions.get_repository_def().get_job(job_name)
        run_id = str(uuid.uuid4())
        run = job.execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False, run_id=run_id,
            tags={"cmp/trigger": "cli", **process_tags(run_id)},
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        return RunOutcome(job_name, partition_key, run.run_id, run.success, _run_error(run))
    finally:
        if own_instance:
            instance.dispose()


def _run_error(run) -> str | None:
    if run.success:
        return None
    failures = [e for e in run.all_events if e.is_step_failure]
    return _failure_text(failures[0].step_failure_data) if failures else "run failed"


def _failure_text(data) -> str:
    """The operator-facing reason: a Failure's description, else the innermost exception's message."""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()
