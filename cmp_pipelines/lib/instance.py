"""The Dagster instance as the CLI prepares and uses it, so no CLI module imports Dagster itself."""

from __future__ import annotations

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

