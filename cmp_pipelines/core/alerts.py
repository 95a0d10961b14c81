"""Operational alerts beyond the probes: a quarantined inbound file and a failed run, to the feed's recipients
(`config/alerts.yaml`). Each is queued in the e-mail outbox under an id derived from what it is about (the file,
the run), so however often the dispatcher or the run-failure sensor looks, one alert goes out per file or run."""

from __future__ import annotations

from datetime import datetime

import duckdb

from cmp_pipelines.core import outbox
from cmp_pipelines.core.config_workflow import AlertRecipients


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


def queue_run_failure_alert(con: duckdb.DuckDBPyConnection, recipients: AlertRecipients, *, run_id: str,
                            job_name: str, feed: str | None, partition: str | None, error: str,
                            now: datetime) -> tuple[str, bool]:
    where = f" (partition {partition})" if partition else ""
    body = (f"Run {run_id} of job {job_name}{where} failed.\n\n{error}\n\nOpen the run in the Dagster UI to see its "
            "logs and re-execute it once the cause is fixed.\n")
    return outbox.enqueue(con, kind="ALERT", key=f"run-failure-{run_id}", recipients=recipients.for_feed(feed),
                          subject=f"[CMP ALERT] run failed: {job_name}{where}", body_text=body, now=now,
                          source_ref=f"run:{run_id}")
