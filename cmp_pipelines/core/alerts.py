"""Operational alerts beyond the probes: a quarantined inbound file and a failed run, to the feed's recipients
(`config/alerts.yaml`). Each is queued in the e-mail outbox under an id derived from what it is about (the file,
the run), so however often the dispatcher or the run-failure sensor looks, one alert goes out per file or run."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import duckdb
import orjson

from cmp_pipelines.core import outbox
from cmp_pipelines.core.config_workflow import AlertRecipients
from cmp_pipelines.core.settings import paths


def queue_quarantine_alerts(con: duckdb.DuckDBPyConnection, recipients: AlertRecipients, now: datetime) -> list[str]:
    """One alert per quarantined file not yet alerted; returns the new message ids."""
    rows = con.execute(
        """
        SELECT f.file_id, f.feed, f.partner, f.file_name, coalesce(f.error_code, 'UNKNOWN'), coalesce(f.error, ''),
               f.quarantined_path, f.received_at
        FROM inbound_files f
        WHERE f.status = 'QUARANTINED'
          AND NOT EXISTS (SELECT 1 FROM email_outbox o
                          WHERE o.kind = 'ALERT' AND o.source_ref = 'quarantine:' || f.file_id)
        ORDER BY f.received_at, f.file_id
        """
    ).fetchall()
    queued = []
    for file_id, feed, partner, name, code, error, path, received_at in rows:
        body = (f"The {feed} file {name!r} from partner {partner}, received {received_at:%Y-%m-%d %H:%M:%S %Z}, was "
                f"quarantined and nothing in it was processed.\n\nReason: {code} - {error}\n"
                f"Kept at: {path}\n\nFix the cause with the partner and drop a corrected file; "
                "`cmp-pipelines files` shows the file's history.\n")
        mid, new = outbox.enqueue(con, kind="ALERT", key=f"quarantine-{file_id}",
                                  recipients=recipients.for_feed(feed),
                                  subject=f"[CMP ALERT] {feed} file quarantined: {partner}/{name}", body_text=body,
                                  now=now, source_ref=f"quarantine:{file_id}")
        if new:
            queued.append(mid)
    return queued


def failure_spool() -> Path:
    return paths().data_dir / "spool" / "run_failures"


def run_failure(*, run_id: str, job_name: str, feed: str | None, partition: str | None, error: str,
                now: datetime) -> dict:
    return {"run_id": run_id, "job_name": job_name, "feed": feed, "partition": partition, "error": error,
            "failed_at": now.isoformat()}


def spool_run_failure(*, run_id: str, job_name: str, feed: str | None, partition: str | None, error: str,
                      now: datetime) -> Path:
    """What the run-failure sensor records on the embedded store: a small file, not a store write, so a sensor
    tick never waits on the store's lock while a run holds it. The dispatcher turns it into the alert; the run id
    names it, so the sensor seeing the failure twice spools it once. (On PostgreSQL the sensor queues the alert
    itself: the spool is the daemon's disk, which runs on other machines never drain.)"""
    folder = failure_spool()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9-]', '_', run_id)}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(run_failure(run_id=run_id, job_name=job_name, feed=feed, partition=partition,
                                             error=error, now=now)))
    os.replace(tmp, path)
    return path


def spooled_failures() -> list[Path]:
    folder = failure_spool()
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def queue_run_failure(con: duckdb.DuckDBPyConnection, recipients: AlertRecipients, failure: dict,
                      now: datetime) -> str | None:
    """The alert for one failed run (`failure` as `spool_run_failure` records it); its message id when new."""
    partition = failure["partition"]
    where = f" (partition {partition})" if partition else ""
    body = (f"Run {failure['run_id']} of job {failure['job_name']}{where} failed at {failure['failed_at']}."
            f"\n\n{failure['error']}\n\nOpen the run in the Dagster UI to see its logs and re-execute it once "
            "the cause is fixed.\n")
    mid, new = outbox.enqueue(con, kind="ALERT", key=f"run-failure-{failure['run_id']}",
                              recipients=recipients.for_feed(failure["feed"]),
                              subject=f"[CMP ALERT] run failed: {failure['job_name']}{where}", body_text=body,
                              now=now, source_ref=f"run:{failure['run_id']}")
    return mid if new else None


def queue_spooled_run_failures(con: duckdb.DuckDBPyConnection, recipients: AlertRecipients,
                               now: datetime) -> list[str]:
    """An alert per spooled failed run, then the spool file goes (a crash in between queues nothing twice)."""
    queued = []
    for path in spooled_failures():
        mid = queue_run_failure(con, recipients, orjson.loads(path.read_bytes()), now)
        path.unlink()
        if mid:
            queued.append(mid)
    return queued
