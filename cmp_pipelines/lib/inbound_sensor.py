"""Inbound-file sensors: one factory, one sensor per feed. A tick never raises on one bad file.

A refused entry (symlink, FIFO, a name the store cannot keep) is logged and reported by one run of
`inbound_refusals_job`, once per entry; it is never read, moved or followed.

The sensors declare no resources: Dagster builds a sensor's resources with a Dagster instance, opened from its
reference on every tick (storage connections and a schema-revision check, dagster#14345), so every feed's tick
every 5 s cost that much CPU on a 2-core machine while nothing arrived. They list the local store directly.

The sensor daemon loops every 5 s (`MIN_INTERVAL_LOOP_TIME`) and skips a sensor whose last tick started less than
its minimum interval ago; a tick starts a moment after its loop does, so an interval of 5 s was due only every
other loop: a dropped file waited 5 s on average and up to 10 s (8.6 s drop -> run measured by the orchestrated
bench). `PICKUP_SECONDS` below the loop period makes every loop tick: the same 5 s cadence the design intends.

On a store that several machines share (the object store), a file is claimed before its run is asked for
(`claims/<feed>/<hash of the run key>`, written only if absent): when two sensors see one file - two deployments,
or a second daemon, on one bucket - exactly one asks for its run. One sensor on one Dagster instance never asks
twice anyway (run keys); behind both, the store's intake row (`inbound_files`, one per file id, written in the
batch's transaction) keeps a second run from loading it again.

A tick that finds nothing to take may wait for an upload (`listen_seconds`): it watches the feed's folders' change
times five times a second for up to 3.5 s and scans again whenever one moves (an upload under its temporary name moves
it too: the tick then goes on waiting for the rename), so a file renamed into place is taken
within a fifth of a second instead of at the next loop (0-5 s later). The daemon's loop stays 5 s; the tick must end
before the next loop begins, or that loop skips the sensor. A waiting tick holds a daemon thread and a code-server
thread, so it waits only when both have one for every sensor at once: `sensors: num_workers` in dagster.yaml, and
`DAGSTER_GRPC_MAX_WORKERS` and `DAGSTER_CODE_SERVER_MAX_WORKERS` (the code server's and its proxy's `--max-workers`)
in its environment, as `make run` sets them. Without them, or on a store that cannot say cheaply that a folder
changed (the object store), a tick returns at once. The 3.5 s count from the tick's start; a wait also ends the
UI's "test sensor" and a code server's reload up to 3.5 s later.

While a run that died awaits its recovery run, new files wait (`lib/recovery.awaiting_recovery`): an interrupted
partition is finished before work that arrived after it.
"""


import contextvars
import hashlib
import os
import socket
import time
from contextlib import contextmanager

import dagster as dg

from cmp_pipelines.core import inbound
from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.settings import paths
from cmp_pipelines.lib.inbound_refusals import ENTRY_TAG, FEED_TAG, REFUSED_TAG, inbound_refusals_job
from cmp_pipelines.lib.recovery import awaiting_recovery
from cmp_pipelines.lib.resources.file_store import FileStore, configured_file_store
from cmp_pipelines.lib.sensor_instance import sensor_instance

PICKUP_SECONDS = 2  # below the daemon's 5 s loop, so every loop ticks (see above)
LISTEN_SECONDS = 3.5  # a waiting tick ends well before the daemon's next loop, 5 s after this one began
LISTEN_POLL_SECONDS = 0.2  # idle daemon + code server: 3.5 s CPU per 30 s without waiting ticks, 4.0-4.2 s with
SPARE_SERVER_THREADS = 8  # code-server threads left for the webserver's and the daemon's other calls
CODE_SERVER_THREADS = 24  # what `make run` gives its code server (Makefile), for the 15 sensors and the spare
# the code server's pool (`dagster api grpc --max-workers`) and, under `dg dev`, its proxy's (`dagster code-server
# start --max-workers`): Dagster reads each from its own variable; an explicit `--max-workers` is not seen here
SERVER_THREAD_SETTINGS = ("DAGSTER_GRPC_MAX_WORKERS", "DAGSTER_CODE_SERVER_MAX_WORKERS")


_NOT_HERE = contextvars.ContextVar("cmp_inbound_no_waiting", default=False)


@contextmanager
def no_waiting():
    """Ticks evaluated inside never wait: `run-pending` ticks every sensor in turn until none asks for anything, and a
    wait there would only add 3.5 s per idle feed, whatever the environment says of threads."""
    token = _NOT_HERE.set(True)
    try:
        yield
    finally:
        _NOT_HERE.reset(token)


def listen_seconds(instance: dg.DagsterInstance, sensor_count: int | None) -> float:
    """How long a tick with nothing to take waits for an upload: LISTEN_SECONDS when the daemon evaluates every
    sensor of the code location at once on its threads and the code server has a thread for each and some to spare;
    0 otherwise (a waiting tick would then delay the others' ticks, or every other call to the code server)."""
    if not sensor_count or _NOT_HERE.get():
        return 0.0
    settings = instance.get_settings("sensors") or {}
    daemon_threads = (settings.get("num_workers") or 0) if settings.get("use_threads") else 0
    try:  # both: `dg dev` puts a proxy (`dagster code-server start`) with a pool of its own before `dagster api grpc`
        server_threads = min(int(os.environ.get(name) or 0) for name in SERVER_THREAD_SETTINGS)
    except ValueError:
        return 0.0
    if daemon_threads >= sensor_count and server_threads >= sensor_count + SPARE_SERVER_THREADS:
        return LISTEN_SECONDS
    return 0.0


def wait_for_upload(file_store: FileStore, folder: str, since: tuple | None, seconds: float) -> bool:
    """True as soon as something below `folder` changed after `since` (its `folder_stamp`); False after `seconds`."""
    if since is None or seconds <= 0:
        return False
    deadline = time.monotonic() + seconds
    while True:
        if file_store.folder_stamp(folder) != since:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(LISTEN_POLL_SECONDS, left))


def inbound_file_sensor(
    *, name: str, feed: str, job, partitions_def: dg.DynamicPartitionsDefinition,
    description: str, interval_seconds: int = PICKUP_SECONDS, per_tick: int = 20,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        jobs=[job, inbound_refusals_job],
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        started = time.monotonic()
        dead = awaiting_recovery(sensor_instance(context))
        if dead:
            return dg.SkipReason(f"run {dead} was interrupted and its partition is run again first; new files "
                                 "wait for it")
        file_store = configured_file_store()
        partners = load_partners(paths().config_dir)
        folder = f"inbound/{feed}"
        listen = 0.0 if file_store.shared else listen_seconds(
            sensor_instance(context), len(context.repository_def.sensor_defs) if context.repository_def else None)
        stamp = file_store.folder_stamp(folder) if listen else None  # before the scan: nothing lands unseen
        pending, skipped, cursor = inbound.scan(file_store, feed, context.cursor, per_tick, partners=partners)
        deadline = started + listen
        while not pending and not any(item.report for item in skipped) and wait_for_upload(
                file_store, folder, stamp, deadline - time.monotonic()):
            stamp = file_store.folder_stamp(folder)  # an upload still under way (`.part`) changes it too: wait on
            pending, skipped, cursor = inbound.scan(file_store, feed, cursor, per_tick, partners=partners)
        if file_store.shared:
            pending = claimed(file_store, feed, pending, _owner(sensor_instance(context)), context.log)
        refusals = []
        for item in skipped:
            if item.report:
                context.log.warning(f"refused {item.path}: {item.why}")
                refusals.append(dg.RunRequest(
                    job_name=inbound_refusals_job.name,
                    run_key=f"refused:{feed}:{item.identity}",
                    tags={FEED_TAG: feed, ENTRY_TAG: item.path, REFUSED_TAG: item.why},
                ))
            else:
                context.log.info(f"not taken yet: {item.path}: {item.why}")
        keys = sorted({p.partition_key for p in pending})
        return dg.SensorResult(
            run_requests=[
                *(dg.RunRequest(
                    job_name=job.name,
                    run_key=p.run_key,
                    partition_key=p.partition_key,
                    tags={"cmp/feed": feed, "cmp/partner": p.partner, "cmp/inbound_file": p.path},
                ) for p in pending),
                *refusals,
            ],
            dynamic_partitions_requests=[partitions_def.build_add_request(keys)] if keys else [],
            cursor=cursor,
        )

    return _sensor


def _owner(instance: dg.DagsterInstance) -> str:
    """Who claims: this Dagster instance on this machine (its DAGSTER_HOME), the same on every tick."""
    home = instance.root_directory if instance.is_persistent else os.environ.get("DAGSTER_HOME", "ephemeral")
    return f"{socket.gethostname()}:{home}"


def claimed(file_store: FileStore, feed: str, pending: list, owner: str, log=None) -> list:
    """The pending files this owner holds the claim of (claimed now, or on an earlier tick that did not finish);
    the others were claimed by another sensor, which asks for their runs."""
    mine = []
    for item in pending:
        digest = hashlib.sha256(item.run_key.encode("utf-8", "surrogateescape")).hexdigest()
        holder = file_store.claim(f"claims/{feed}/{digest}", owner)
        if holder == owner:
            mine.append(item)
        elif log is not None:
            log.info(f"{inbound.display_path(item.path)} is claimed by another sensor; its run is asked for there")
    return mine
