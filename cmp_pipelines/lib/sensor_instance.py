"""The Dagster instance the sensors read."""

from __future__ import annotations

import threading

import dagster as dg

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
