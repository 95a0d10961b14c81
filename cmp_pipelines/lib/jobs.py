"""How every flow's jobs and schedules are built, for the `defs.py` of each flow.

Every job runs with the in-process executor; every schedule starts RUNNING."""

import dagster as dg

# Step order inside a run (the executor runs ready steps by `dagster/priority`, highest first): checks report on
# what the assets did and nothing downstream waits for them, so every asset of a run, the acknowledgement and
# the posting file included, is done before the probes (AFTER_ASSETS) and the data-quality suites
# (LAST: slowest, and only a WARN) start.
AFTER_ASSETS = {"dagster/priority": "-1"}
LAST = {"dagster/priority": "-2"}


def group_job(name: str, group: str, partitions_def: dg.PartitionsDefinition, description: str):
    """The job that materialises one asset group, one partition a run."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.groups(group),
        partitions_def=partitions_def,
        executor_def=dg.in_process_executor,
        description=description,
    )


def probes_job(name: str, checks: list, description: str):
    """The job that evaluates these asset checks without materialising anything."""
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.checks(*checks),
        executor_def=dg.in_process_executor,
        description=description,
    )


def daily_schedule(name: str, job, hour: int, minute: int, description: str) -> dg.ScheduleDefinition:
    """The day's partition of a daily-partitioned job, at hour:minute in the partitions' time zone."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name=name,
        hour_of_day=hour,
        minute_of_hour=minute,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )


def end_of_day_schedule(name: str, job, cron_schedule: str, description: str) -> dg.ScheduleDefinition:
    """An unpartitioned job (the probes) on a UTC cron, so 'today' probes run even when no file came."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
