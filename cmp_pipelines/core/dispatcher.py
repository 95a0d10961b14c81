"""One pass of the dispatcher, shared by the Dagster job and `cmp-pipelines events dispatch`: alerts for newly
quarantined files and spooled failed runs, the workflow actions due, then every e-mail due (new ones and
retries), then the advance notices whose message has left are marked SENT."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from cmp_pipelines.core import alerts, notices, outbox, workflow
from cmp_pipelines.core.config_workflow import load_alerts, load_workflow_actions
from cmp_pipelines.core.templates import Templates


def run_dispatcher(con: duckdb.DuckDBPyConnection, config_dir: Path, smtp: outbox.SmtpSettings,
                   now: datetime) -> dict:
    """On PostgreSQL (`con` a core/db/pg_duck.PgDuck) the whole pass holds one advisory lock: two dispatchers at
    once (two daemons, the CLI beside the daemon) run one after the other, and the second finds the first's
    events DONE and its messages SENT, so nothing is sent twice. The embedded store's single writer does that."""
    exclusive = getattr(con, "exclusive", None)
    if exclusive is None:
        return _dispatch_pass(con, config_dir, smtp, now)
    with exclusive("workflow:dispatch"):
        return _dispatch_pass(con, config_dir, smtp, now)


def _dispatch_pass(con, config_dir: Path, smtp: outbox.SmtpSettings, now: datetime) -> dict:
    recipients = load_alerts(config_dir)
    quarantined = alerts.queue_quarantine_alerts(con, recipients, now)
    failed_runs = alerts.queue_spooled_run_failures(con, recipients, now)
    report = workflow.dispatch(con, load_workflow_actions(config_dir), Templates(config_dir / "templates"), now)
    delivery = outbox.deliver(con, smtp, now)
    notices_sent = notices.refresh_sent(con)  # a notice counts from the moment its message left
    return {
        "events_registered": report.registered,
        "actions_done": report.done,
        "communications_skipped_no_email": report.skipped,
        "actions_retrying": report.retrying,
        "actions_failed": report.failed,
        "quarantine_alerts_queued": len(quarantined),
        "run_failure_alerts_queued": len(failed_runs),
        "messages_sent": len(delivery.sent),
        "messages_retrying": len(delivery.retrying),
        "messages_failed": len(delivery.failed),
        "advance_notices_sent": notices_sent,
    }
