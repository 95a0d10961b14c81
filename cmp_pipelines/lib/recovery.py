"""Runs that died (kill -9, a power cut, an OOM kill) are found, failed and their slots freed, and their
partition is run again, once, so every batch is driven to the end exactly once.

Dagster's code server fails a run whose worker process dies, but only for runs it launched itself and only while
it lives; a run executed by the CLI, or one whose code server died with it, would stay STARTED for ever. So every
run is tagged with the process that executes it (`tag_run_process`), and `reap_dead_runs` fails the runs whose
process is gone. `recovery_requests` then asks for one new run of each partition whose latest run died without
a step failure (a step that failed on bad input reported its reason and is not retried blindly). Every step is
idempotent (inbound files are keyed by content, postings by idempotency key, documents are rewritten whole), so
the new run finishes what the dead one left, without posting anything twice.

A run executed on another machine (a Celery run worker, lib/run_workers) cannot have its process looked up from
here: such a run carries a heartbeat (`cmp/heartbeat`, renewed by its process every lease / 6) and is judged dead
when the heartbeat is older than the lease (`CMP_RUN_LEASE_SECONDS`, default 120). A worker machine lost
mid-run is then handled as a local kill is: the run is failed and its partition goes to another worker.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from cmp_pipelines.core import processes

PID_TAG, HOST_TAG, PID_RUN_TAG = "cmp/process", "cmp/host", "cmp/process_run"
HEARTBEAT_TAG = "cmp/heartbeat"
LEASE_SETTING = "CMP_RUN_LEASE_SECONDS"
RECOVERY_OF_TAG = "cmp/recovery_of"
MAX_RECOVERIES = 3
RECOVERY_SENSOR = "cmp_run_recovery_sensor"
# An interrupted partition is finished before newer work: the run queue dequeues by `dagster/priority`, highest
# first. Outcomes can depend on order (an ADDACS amendment applied before or after the same day's ARUDD cancels
# the mandate), so a recovered run goes where the killed one was, ahead of files that arrived after it.
RECOVERY_PRIORITY = {"dagster/priority": "1"}
ALIVE = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
         dg.DagsterRunStatus.CANCELING]


def process_tags(run_id: str) -> dict[str, str]:
    """Which process executes `run_id`; the run id is part of it, so a re-execution that copies its parent's tags
    never inherits the parent's (dead) process."""
    return {PID_TAG: processes.token(), HOST_TAG: processes.host(), PID_RUN_TAG: run_id}


def lease() -> timedelta:
    """How long a run on another machine may go without a heartbeat before it is judged dead."""
    raw = os.environ.get(LEASE_SETTING) or "120"
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{LEASE_SETTING} must be a number of seconds, got {raw!r}") from None
    if seconds < 6:
        raise ValueError(f"{LEASE_SETTING} must be at least 6 seconds, got {raw!r}")
    return timedelta(seconds=seconds)


def _heartbeat(instance: dg.DagsterInstance, run_id: str, every: float) -> None:
    """Renew the run's heartbeat until it finishes (the worker's pool process lives on after it) or the instance
    goes away with the process."""
    stop = threading.Event()
    while not stop.wait(every):
        try:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                return
            instance.add_run_tags(run_id, {HEARTBEAT_TAG: datetime.now(UTC).isoformat(timespec="seconds")})
        except Exception:  # noqa: BLE001 - the instance is closing with the run's process: nothing to renew
            return


def tag_run_process(instance: dg.DagsterInstance, run_id: str | None) -> None:
    """Called at run start (the store resource's set-up): name the process executing this run; on a run worker,
    start its heartbeat."""
    if not run_id:
        return
    from cmp_pipelines.lib.run_workers import broker_url

    run = instance.get_run_by_id(run_id)
    if run is not None and (run.tags.get(PID_TAG), run.tags.get(PID_RUN_TAG)) != (processes.token(), run_id):
        tags = process_tags(run_id)
        remote = broker_url() is not None
        if remote:
            tags[HEARTBEAT_TAG] = datetime.now(UTC).isoformat(timespec="seconds")
        instance.add_run_tags(run_id, tags)
        if remote:
            threading.Thread(target=_heartbeat, args=(instance, run_id, lease().total_seconds() / 6),
                             name=f"cmp-heartbeat-{run_id[:8]}", daemon=True).start()


def _dead(run: dg.DagsterRun) -> bool:
    """This machine's run: its process is gone. Another machine's: its heartbeat is older than the lease (no
    heartbeat: it cannot be judged from here, so it is alive)."""
    owner = run.tags.get(PID_TAG)
    if not owner or run.tags.get(PID_RUN_TAG) != run.run_id:
        return False
    if run.tags.get(HOST_TAG) == processes.host():
        return not processes.alive(owner)
    beat = run.tags.get(HEARTBEAT_TAG)
    return bool(beat) and datetime.now(UTC) - datetime.fromisoformat(beat) > lease()


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the unfinished runs whose process is gone and free every slot a finished run still holds."""
    reaped = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=ALIVE), limit=500):
        run = record.dagster_run
        if _dead(run):
            run = instance.get_run_by_id(run.run_id)  # a dead process writes nothing more: this read is final
            if run is None or run.is_finished:
                continue
            where = ("" if run.tags.get(HOST_TAG) == processes.host()
                     else f" on {run.tags.get(HOST_TAG, '?').split('/')[0]}, silent for more than {lease()},")
            instance.report_engine_event(
                f"The process that executed this run ({run.tags[PID_TAG].split('-')[0]}){where} is gone (killed or "
                "crashed): the run is marked failed and its concurrency slots freed; its partition is run again "
                f"by {RECOVERY_SENSOR}.", run)
            instance.report_run_failed(run)
            reaped.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=list(holders)), limit=500):
                if record.dagster_run.is_finished:
                    storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
    return reaped


@dataclass(frozen=True)
class GaveUp:
    job_name: str
    partition_key: str
    run_id: str


def _died(instance: dg.DagsterInstance, run_id: str) -> bool:
    """A run that ended without any step failing was stopped from outside (killed, crashed, reaped)."""
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1)
    return not failures.records


def recovery_requests(
    instance: dg.DagsterInstance, job_names: list[str] | None, limit: int = 200,
    updated_after: datetime | None = None,
) -> tuple[list[dg.RunRequest], list[GaveUp]]:
    """One request per partition whose latest run died: run key `recover:<dead run id>`, so it is made once.
    `job_names` None: every partitioned job (all of them are recoverable, see definitions.RECOVERABLE_JOBS)."""
    failed = instance.get_run_records(  # not CANCELED: an operator's cancel is a decision, not a crash
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=updated_after), limit=limit,
    )
    requests, gave_up, seen = [], [], set()
    for record in failed:
        run = record.dagster_run
        partition = run.tags.get("dagster/partition")
        if (job_names is not None and run.job_name not in job_names) or not partition \
                or (run.job_name, partition) in seen:
            continue
        seen.add((run.job_name, partition))
        runs = instance.get_runs(
            filters=dg.RunsFilter(job_name=run.job_name, tags={"dagster/partition": partition}), limit=20,
        )
        if not runs or runs[0].run_id != run.run_id or any(not r.is_finished for r in runs) \
                or not _died(instance, run.run_id):
            continue  # a later or unfinished run exists, or a step failed and said why
        if sum(1 for r in runs if RECOVERY_OF_TAG in r.tags) >= MAX_RECOVERIES:
            gave_up.append(GaveUp(run.job_name, partition, run.run_id))
            continue
        requests.append(dg.RunRequest(
            run_key=f"recover:{run.run_id}", job_name=run.job_name, partition_key=partition,
            tags={**{k: v for k, v in run.tags.items()
                     if k.startswith("cmp/") and k not in (PID_TAG, HOST_TAG, PID_RUN_TAG, HEARTBEAT_TAG)},
                  RECOVERY_OF_TAG: run.run_id, **RECOVERY_PRIORITY},
        ))
    return requests, gave_up


def recovered(instance: dg.DagsterInstance, run_ids: list[str]) -> bool:
    """True when one of these (failed) runs already has a recovery run."""
    return any(instance.get_runs(filters=dg.RunsFilter(tags={RECOVERY_OF_TAG: run_id}), limit=1)
               for run_id in run_ids)


# How long new files wait for a dead run whose recovery has not been asked for (the recovery sensor ticks every
# 30 s); past it they go on, so a stopped recovery sensor delays files, never stalls them.
HOLD_FOR = timedelta(minutes=2)


def awaiting_recovery(instance: dg.DagsterInstance) -> str | None:
    """A partitioned run that died and whose partition is not re-run yet: newer files wait for it.

    The recovery run's priority orders the queue, but the daemon can launch a new file's run in the seconds
    before the recovery sensor notices the death; outcomes can depend on order (an ADDACS amendment before or
    after the same day's ARUDD cancels the mandate), so the inbound sensors hold new work until then."""
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=ALIVE), limit=100):
        run = record.dagster_run
        if run.tags.get("dagster/partition") and _dead(run):
            return run.run_id
    requests, _ = recovery_requests(instance, None, limit=20, updated_after=datetime.now(UTC) - HOLD_FOR)
    return requests[0].tags[RECOVERY_OF_TAG] if requests else None
