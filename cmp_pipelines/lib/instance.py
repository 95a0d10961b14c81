"""The Dagster instance as the CLI prepares and uses it, so no CLI module imports Dagster itself, and as the
sensors read it."""

from __future__ import annotations

import threading

import dagster as dg

from cmp_pipelines.lib.resources.database import DB_POOL


def limit_store_pool(limit: int = 1) -> None:
    """The pool every store step joins gets `limit` slots: 1 on the embedded store (one writer at a time), the
    setting's number on PostgreSQL (core/settings `store_pool_limit`)."""
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(DB_POOL, limit)


def run_new_partition(partitions_name: str, partition_key: str, job_name: str):
    """What a sensor does for a dynamic partition: add it, then run the job for it."""
    from cmp_pipelines.lib.headless import run_partition

    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(partitions_name, [partition_key])
        return run_partition(job_name, partition_key, instance=instance)


_SENSOR_INSTANCES: dict[str, dg.DagsterInstance] = {}
_SENSOR_INSTANCES_LOCK = threading.Lock()


def sensor_instance(context: dg.SensorEvaluationContext) -> dg.DagsterInstance:
    """The Dagster instance a sensor reads, opened once per code-server process and reused by every tick.

    `context.instance` opens a new instance from its reference on every evaluation (storage engines and an alembic
    revision check): py-spy of an idle code server put 85% of its CPU there, with nine sensors ticking every 5 s -
    CPU taken from the runs on a 2-core machine. A context built around an instance (tests, `run-pending`) has no
    reference and is used as it is."""
    from dagster._serdes import serialize_value

    ref = context.instance_ref
    if ref is None:
        return context.instance
    key = serialize_value(ref)
    with _SENSOR_INSTANCES_LOCK:
        instance = _SENSOR_INSTANCES.get(key)
        if instance is None:
            instance = _SENSOR_INSTANCES[key] = dg.DagsterInstance.from_ref(ref)
        return instance
