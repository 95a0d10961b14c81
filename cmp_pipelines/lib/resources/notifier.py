"""Alert notifier: every alert goes through the e-mail outbox (`cmp_pipelines.core.outbox`), SMTP when
`CMP_SMTP_HOST` is set, otherwise `.eml` files under `outbound/alerts/`. A refused send stays queued and is retried
by the workflow dispatcher; it is never reported as notified."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import duckdb

from cmp_pipelines.core import outbox
from cmp_pipelines.core.outbox import SmtpSettings


class Notifier(dg.ConfigurableResource):
    smtp_host: str | None = None
    smtp_port: int | None = None
    sender: str | None = None

    def smtp(self) -> SmtpSettings:
        return SmtpSettings.from_env(self.smtp_host, self.smtp_port, self.sender)

    def alert(self, con: duckdb.DuckDBPyConnection, *, key: str, recipients: list[str] | tuple[str, ...],
              subject: str, body: str, now: datetime, source_ref: str | None = None) -> tuple[str, str | None]:
        """Queue the alert and try it at once; returns (message id, where it went or None while queued)."""
        mid, _ = outbox.enqueue(con, kind="ALERT", key=key, recipients=recipients, subject=subject, body_text=body,
                                now=now, source_ref=source_ref)
        delivery = outbox.deliver(con, self.smtp(), now, only=[mid])
        where = delivery.sent.get(mid)
        if where == "file":
            where = con.execute("SELECT delivered_to FROM email_outbox WHERE message_id = ?", [mid]).fetchone()[0]
        return mid, where

    def deliver_due(self, con: duckdb.DuckDBPyConnection, now: datetime) -> outbox.Delivery:
        return outbox.deliver(con, self.smtp(), now)
