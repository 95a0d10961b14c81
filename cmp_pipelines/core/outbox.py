"""The e-mail outbox: every alert and customer communication is queued here first, then delivered by SMTP.

A message is recorded SENT only once the SMTP server accepted it; a refused or unreachable server leaves it PENDING
with its attempts, last error and next attempt time (exponential backoff), and FAILED once the attempts run out, so
an alert is never reported as delivered when it was not. The message id is the table's key: queueing the same
message again (a re-run, a dispatcher that crashed after queueing) is a no-op, and the recipient's mail client
sees one Message-ID even if a crash between the server's 250 and our SENT makes us deliver it twice.

Without an SMTP host (`CMP_SMTP_HOST` unset) a message is written as an `.eml` file instead: alerts under
`outbound/alerts/`, communications under `outbound/communications/mail/`.
"""

from __future__ import annotations

import hashlib
import os
import re
import smtplib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import duckdb

from cmp_pipelines.core.settings import paths

DOMAIN = "cmp-pipelines.local"
MAX_ATTEMPTS = 8
FIRST_RETRY = timedelta(minutes=1)
LONGEST_WAIT = timedelta(hours=1)
KINDS = ("ALERT", "COMMUNICATION")


def message_id(kind: str, key: str) -> str:
    """A Message-ID derived from what the message is about (an event id, a probe and time, a run id)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-")
    if len(safe) > 64:  # a partner's long file name: keep the id short, and still one per key
        safe = f"{safe[:40]}-{hashlib.sha256(key.encode()).hexdigest()[:20]}"
    return f"<cmp-{kind.lower()}-{safe}@{DOMAIN}>"


def backoff(attempts: int) -> timedelta:
    return min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), LONGEST_WAIT)


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None
    port: int = 25
    sender: str = "cmp-pipelines@localhost"
    starttls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None, sender: str | None = None) -> SmtpSettings:
        return cls(
            host=host or os.environ.get("CMP_SMTP_HOST") or None,
            port=port or int(os.environ.get("CMP_SMTP_PORT", "25")),
            sender=sender or os.environ.get("CMP_SMTP_FROM", "cmp-pipelines@localhost"),
            starttls=os.environ.get("CMP_SMTP_STARTTLS") == "1",
            user=os.environ.get("CMP_SMTP_USER") or None,
            password=os.environ.get("CMP_SMTP_PASSWORD"),
        )


def enqueue(con: duckdb.DuckDBPyConnection, *, kind: str, key: str, recipients: list[str] | tuple[str, ...],
            subject: str, body_text: str, now: datetime, body_html: str | None = None,
            source_ref: str | None = None, account_number: str | None = None) -> tuple[str, bool]:
    """Queue one message; returns (message id, whether it is new). The same key again queues nothing."""
    if kind not in KINDS:
        raise ValueError(f"message kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not recipients:
        raise ValueError(f"message {key!r} has no recipients")
    mid = message_id(kind, key)
    inserted = con.execute(
        "INSERT INTO email_outbox (message_id, kind, source_ref, account_number, recipients, subject, body_text, "
        "body_html, status, attempts, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', 0, ?, ?) ON CONFLICT DO NOTHING",
        [mid, kind, source_ref, account_number, list(recipients), subject, body_text, body_html, now, now],
    ).fetchone()[0]
    return mid, bool(inserted)


@dataclass
class Delivery:
    sent: dict[str, str] = field(default_factory=dict)  # message id -> where it went
    retrying: dict[str, str] = field(default_factory=dict)  # message id -> why it was not accepted
    failed: dict[str, str] = field(default_factory=dict)  # attempts exhausted


_COLUMNS = "message_id, kind, recipients, subject, body_text, body_html, attempts, created_at"


def compose(row: tuple, sender: str) -> EmailMessage:
    mid, _kind, recipients, subject, text, html, _attempts, created_at = row
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(created_at.astimezone(UTC))
    message["Message-ID"] = mid
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


def _folder(kind: str) -> Path:
    base = paths().outbound
    return base / "alerts" if kind == "ALERT" else base / "communications" / "mail"


def _write_eml(row: tuple, message: EmailMessage, now: datetime) -> str:
    folder = _folder(row[1])
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", row[3].lower()).strip("-")[:50]
    name = hashlib.sha256(row[0].encode()).hexdigest()[:16]  # the same message, the same file
    path = folder / f"{row[7].astimezone(UTC):%Y%m%dT%H%M%S}-{slug}-{name}.eml"
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(bytes(message))
    os.replace(tmp, path)
    return f"file://{path}"


def _sent(con, mid: str, where: str, now: datetime, note: str | None = None) -> None:
    con.execute("UPDATE email_outbox SET status = 'SENT', attempts = attempts + 1, delivered_to = ?, sent_at = ?, "
                "last_error = ? WHERE message_id = ?", [where, now, note, mid])


def _not_sent(con, row: tuple, why: str, now: datetime, delivery: Delivery) -> None:
    attempts = row[6] + 1
    status = "FAILED" if attempts >= MAX_ATTEMPTS else "PENDING"
    con.execute("UPDATE email_outbox SET status = ?, attempts = ?, last_error = ?, next_attempt_at = ? "
                "WHERE message_id = ?", [status, attempts, why, now + backoff(attempts), row[0]])
    (delivery.failed if status == "FAILED" else delivery.retrying)[row[0]] = why


def _why(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
                        for code, msg in exc.recipients.values()})
        return f"SMTP refused every recipient: {'; '.join(codes)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"SMTP {exc.smtp_code} {text}".strip()
    return f"{type(exc).__name__}: {exc}"


def deliver(con: duckdb.DuckDBPyConnection, settings: SmtpSettings, now: datetime, *,
            only: list[str] | None = None, limit: int = 500) -> Delivery:
    """Send the messages due now (or the `only` ones, if still pending), over one SMTP session."""
    where = "status = 'PENDING' AND next_attempt_at <= ?"
    params: list = [now]
    if only is not None:
        if not only:
            return Delivery()
        where = f"status = 'PENDING' AND message_id IN ({', '.join('?' * len(only))})"
        params = list(only)
    rows = con.execute(f"SELECT {_COLUMNS} FROM email_outbox WHERE {where} ORDER BY created_at, message_id "
                       f"LIMIT {int(limit)}", params).fetchall()
    delivery = Delivery()
    if not rows:
        return delivery
    if not settings.host:
        for row in rows:
            _sent(con, row[0], _write_eml(row, compose(row, settings.sender), now), now)
            delivery.sent[row[0]] = "file"
        return delivery
    target = f"smtp://{settings.host}:{settings.port}"
    try:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    except (OSError, smtplib.SMTPException) as exc:
        for row in rows:
            _not_sent(con, row, f"cannot reach {target}: {_why(exc)}", now, delivery)
        return delivery
    try:
        if settings.starttls:
            smtp.starttls()
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        for row in rows:
            try:
                refused = smtp.send_message(compose(row, settings.sender))
            except smtplib.SMTPServerDisconnected as exc:
                _not_sent(con, row, _why(exc), now, delivery)
                break
            except (OSError, smtplib.SMTPException) as exc:
                _not_sent(con, row, _why(exc), now, delivery)
                try:
                    smtp.rset()
                except (OSError, smtplib.SMTPException):
                    break
                continue
            note = f"refused for {', '.join(sorted(refused))}" if refused else None
            _sent(con, row[0], target, now, note)
            delivery.sent[row[0]] = target
    except (OSError, smtplib.SMTPException) as exc:  # STARTTLS or login failed: nothing went out
        for row in rows:
            if row[0] not in delivery.sent and row[0] not in delivery.retrying and row[0] not in delivery.failed:
                _not_sent(con, row, _why(exc), now, delivery)
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    return delivery


def listing(con: duckdb.DuckDBPyConnection, status: str | None = None, kind: str | None = None,
            limit: int = 50) -> list[tuple]:
    return con.execute(
        "SELECT message_id, kind, status, attempts, array_to_string(recipients, ', '), subject, created_at, "
        "sent_at, last_error FROM email_outbox WHERE (? IS NULL OR status = ?) AND (? IS NULL OR kind = ?) "
        "ORDER BY created_at DESC, message_id LIMIT ?", [status, status, kind, kind, limit]).fetchall()
