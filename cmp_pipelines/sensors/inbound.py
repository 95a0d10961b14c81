"""Inbound-file sensors: one factory, one sensor per feed. A tick never raises on one bad file."""


import dagster as dg

from cmp_pipelines.resources.file_store import FileStore
from cmp_pipelines.services import inbound


def inbound_file_sensor(
    *, name: str, feed: str, job, partitions_def: dg.DynamicPartitionsDefinition,
    description: str, interval_seconds: int = 10, per_tick: int = 20,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def _sensor(context: dg.SensorEvaluationContext, file_store: FileStore) -> dg.SensorResult:
        pending, skipped, cursor = inbound.scan(file_store, feed, context.cursor, per_tick)
        for item in skipped:
            context.log.warning(f"ignored {item.path}: {item.why}")
        keys = sorted({p.partition_key for p in pending})
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=p.run_key,
                    partition_key=p.partition_key,
                    tags={"cmp/feed": feed, "cmp/partner": p.partner, "cmp/inbound_file": p.path},
                )
                for p in pending
            ],
            dynamic_partitions_requests=[partitions_def.build_add_request(keys)] if keys else [],
            cursor=cursor,
        )

    return _sensor
