"""Alert notifier: SMTP when `CMP_SMTP_HOST` is set, otherwise `.eml` files under `outbound/alerts/`."""

from __future__ import annotations

import os
import re
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import dagster as dg

from cmp_pipelines.core.settings import paths


class Notifier(dg.ConfigurableResource):
    smtp_host: str | None = None
    smtp_port: int | None = None
    sender: str | None = None
    alerts_dir: str | None = None

    def _host(self) -> str | None:
        return self.smtp_host or os.environ.get("CMP_SMTP_HOST") or None

    def compose(self, recipients: list[str], subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender or os.environ.get("CMP_SMTP_FROM", "cmp-pipelines@localhost")
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain="cmp-pipelines.local")
        message.set_content(body)
        return message

    def send(self, recipients: list[str], subject: str, body: str) -> str:
        """Deliver the alert; returns where it went (an SMTP host or the .eml path)."""
        message = self.compose(recipients, subject, body)
        host = self._host()
        if host:
            port = self.smtp_port or int(os.environ.get("CMP_SMTP_PORT", "25"))
            try:
                with smtplib.SMTP(host, port, timeout=10) as smtp:
                    if os.environ.get("CMP_SMTP_STARTTLS") == "1":
                        smtp.starttls()
                    user = os.environ.get("CMP_SMTP_USER")
                    if user:
                        smtp.login(user, os.environ.get("CMP_SMTP_PASSWORD", ""))
                    smtp.send_message(message)
                return f"smtp://{host}:{port}"
            except (OSError, smtplib.SMTPException) as exc:
                # Never lose an alert: keep it as a file, and say why in its headers.
                message["X-CMP-Undelivered"] = f"SMTP {host}:{port} failed: {type(exc).__name__}"
        folder = Path(self.alerts_dir) if self.alerts_dir else paths().outbound / "alerts"
        folder.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:60]
        path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{slug}.eml"
        path.write_bytes(bytes(message))
        return f"file://{path}"
