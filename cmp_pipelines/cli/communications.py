"""`events` (workflow events and their actions), `messages` (the e-mails the local catcher received, and the
outbox) and `smtp-catcher` (the loopback SMTP server `make run` starts)."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import click

from cmp_pipelines.cli.common import _fail, _load_config, _not_found, _service_connect
from cmp_pipelines.core.settings import paths

EVENT_STATUSES = ("NEW", "PENDING", "DONE", "FAILED")


def _when(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@click.group()
def events() -> None:
    """Workflow events and the configured action of each (communication, webhook, operator task)."""


@events.command("list")
@click.option("--account", default=None, help="Only this account's events.")
@click.option("--status", type=click.Choice(EVENT_STATUSES), default=None,
              help="NEW: not dispatched yet; PENDING: waiting or retrying; DONE; FAILED: attempts ran out.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def events_list(account: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """The newest workflow events with their dispatch status."""
    from cmp_pipelines.core.workflow import events as query

    with _service_connect(read_only=True) as con:
        rows = query(con, account=account, status=status, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no workflow events" + (f" for {account}" if account else "") + (f" with status {status}"
                                                                                    if status else ""))
        return
    click.echo(f"{'ID':>6}  {'STATUS':<7}  {'RAISED (UTC)':<19}  {'ACCOUNT':<12}  {'EVENT':<44}  "
               f"{'REASON':<36}  ACTION")
    for r in rows:
        action = f"{r['action'] or '-'}" + (f" {r['target']}" if r["target"] else "")
        reason = f"{r['reason_type']}/{r['reason_code']}" if r["reason_type"] else "-"
        click.echo(f"{r['event_id']:>6}  {r['status']:<7}  {_when(r['raised_at']):<19}  "
                   f"{r['account_number'] or '-':<12}  {r['event_type'] + '/' + r['event_code']:<44}  "
                   f"{reason:<36}  {action}")


@events.command("show")
@click.argument("event_id", type=int)
def events_show(event_id: int) -> None:
    """One event: what raised it, its action, attempts, result or last error, and its e-mail."""
    from cmp_pipelines.core.workflow import events as query

    with _service_connect(read_only=True) as con:
        rows = query(con, event_id=event_id, limit=1)
        if not rows:
            _not_found("event", str(event_id))
        message = con.execute("SELECT message_id, status, array_to_string(recipients, ', '), subject, sent_at, "
                              "last_error FROM email_outbox WHERE kind = 'COMMUNICATION' AND source_ref = ?",
                              [str(event_id)]).fetchone()
        task = con.execute("SELECT queue, status, summary FROM operator_tasks WHERE event_id = ?",
                           [event_id]).fetchone()
    r = rows[0]
    for label, key in (("event", "event_id"), ("type", "event_type"), ("code", "event_code"),
                       ("account", "account_number"), ("source", "source_ref"), ("detail", "detail"),
                       ("reason type", "reason_type"), ("reason code", "reason_code"),
                       ("now pays by", "new_payment_type"),
                       ("raised at", "raised_at"), ("action", "action"), ("target", "target"),
                       ("status", "status"), ("attempts", "attempts"), ("result", "result"),
                       ("last error", "last_error"), ("updated at", "updated_at")):
        value = r[key]
        click.echo(f"{label:>11}: {_when(value) if isinstance(value, datetime) else ('-' if value is None else value)}")
    if message:
        click.echo(f"{'e-mail':>11}: {message[0]} {message[1]} to {message[2]}: {message[3]!r}"
                   + (f" (sent {_when(message[4])})" if message[4] else "")
                   + (f" - last error: {message[5]}" if message[5] else ""))
    if task:
        click.echo(f"{'task':>11}: {task[1]} in queue {task[0]}: {task[2]}")


@events.command("retry")
@click.argument("event_ids", type=int, nargs=-1, required=True)
def events_retry(event_ids: tuple[int, ...]) -> None:
    """Put FAILED events back to PENDING (attempts reset, the action re-read from workflow_actions.yaml); the
    next dispatcher run (or `events dispatch`) carries them out. A DONE event is never repeated."""
    from cmp_pipelines.core.config_workflow import load_workflow_actions
    from cmp_pipelines.core.workflow import retry

    actions = _load_config(load_workflow_actions)
    with _service_connect() as con:
        try:
            changed = retry(con, actions, list(event_ids), datetime.now(UTC))
        except LookupError as exc:
            _fail(str(exc.args[0]))
        except ValueError as exc:
            _fail(str(exc))
    click.echo(f"{changed} event(s) will be dispatched again")


@events.command("dispatch")
def events_dispatch() -> None:
    """Run the dispatcher once now, as workflow_dispatch_job does: quarantine alerts, actions, e-mails due."""
    from cmp_pipelines.core.config import ConfigError
    from cmp_pipelines.core.dispatcher import run_dispatcher
    from cmp_pipelines.core.outbox import SmtpSettings

    with _service_connect() as con:
        try:
            summary = run_dispatcher(con, paths().config_dir, SmtpSettings.from_env(), datetime.now(UTC))
        except ConfigError as exc:
            _fail(f"configuration error: {exc}")
    click.echo(json.dumps(summary, indent=2))


@events.command("tasks")
@click.option("--queue", default=None, help="Only this queue.")
def events_tasks(queue: str | None) -> None:
    """Operator tasks the workflow actions opened."""
    with _service_connect(read_only=True) as con:
        rows = con.execute("SELECT event_id, queue, status, account_number, summary, created_at FROM operator_tasks "
                           "WHERE ? IS NULL OR queue = ? ORDER BY event_id", [queue, queue]).fetchall()
    if not rows:
        click.echo("no operator tasks")
    for event_id, q, status, account, summary, created_at in rows:
        click.echo(f"{event_id:>6}  {status:<6}  {q:<24}  {account or '-':<12}  {_when(created_at)}  {summary}")


# ---- messages -------------------------------------------------------------------------------------------------


def mailbox_dir() -> Path:
    return paths().data_dir / "mailbox"


def _mails() -> list[tuple[str, object]]:
    folder = mailbox_dir()
    if not folder.exists():
        return []
    box = mailbox.Maildir(str(folder), factory=None, create=False)
    parser = BytesParser(policy=policy.default)
    found = [(key, parser.parsebytes(box.get_bytes(key))) for key in box.iterkeys()]
    return sorted(found, key=lambda item: (item[1].get("X-CMP-Received", ""), item[0]))


@click.group()
def messages() -> None:
    """The e-mails the local SMTP catcher received (`make run`), and the outbox they were sent from."""


@messages.command("list")
@click.option("--to", "recipient", default=None, help="Only messages to this address.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def messages_list(recipient: str | None, as_json: bool) -> None:
    """Every message the catcher holds, oldest first, numbered for `messages show N`."""
    rows = []
    for number, (_key, mail) in enumerate(_mails(), start=1):
        if recipient and recipient.lower() not in str(mail.get("X-CMP-Rcpt-To", mail.get("To", ""))).lower():
            continue
        rows.append({"n": number, "received": mail.get("X-CMP-Received", ""), "to": str(mail.get("To", "")),
                     "subject": str(mail.get("Subject", "")), "message_id": str(mail.get("Message-ID", ""))})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no messages in {mailbox_dir()} (the catcher stores what `make run` sends there)")
        return
    for r in rows:
        click.echo(f"{r['n']:>4}  {r['received']:<19}  {r['to'][:40]:<40}  {r['subject']}")


@messages.command("show")
@click.argument("number", type=click.IntRange(1))
@click.option("--html", is_flag=True, help="Print the HTML part instead of the text.")
def messages_show(number: int, html: bool) -> None:
    """Message NUMBER of `messages list`: its headers and body."""
    mails = _mails()
    if number > len(mails):
        _not_found("message", str(number))
    mail = mails[number - 1][1]
    for header in ("Message-ID", "Date", "From", "To", "Subject"):
        click.echo(f"{header}: {mail.get(header, '')}")
    click.echo("")
    part = mail.get_body(preferencelist=("html",) if html else ("plain",))
    click.echo(part.get_content() if part is not None else "(no such part)")


@messages.command("outbox")
@click.option("--status", type=click.Choice(["PENDING", "SENT", "FAILED"]), default=None)
@click.option("--kind", type=click.Choice(["ALERT", "COMMUNICATION"]), default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def messages_outbox(status: str | None, kind: str | None, limit: int) -> None:
    """What the platform queued to send: status, attempts and the last SMTP error of each message."""
    from cmp_pipelines.core.outbox import listing

    with _service_connect(read_only=True) as con:
        rows = listing(con, status, kind, limit)
    if not rows:
        click.echo("the outbox is empty")
    for mid, k, st, attempts, to, subject, _created, _sent, error in rows:
        click.echo(f"{st:<7}  {k:<13}  {attempts:>2}  {to[:40]:<40}  {subject}" + (f"  [{error}]" if error and
                                                                                   st != "SENT" else "")
                   + f"  {mid}")


# ---- smtp-catcher ---------------------------------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command("smtp-catcher")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback only.")
@click.option("--port", default=2525, show_default=True, type=click.IntRange(1, 65535))
def smtp_catcher(host: str, port: int) -> None:
    """A local SMTP server that keeps every message it receives in $CMP_DATA_DIR/mailbox (a Maildir) instead of
    delivering it: point CMP_SMTP_HOST/CMP_SMTP_PORT at it and read the mail with `messages list|show`."""
    import signal
    import threading

    from aiosmtpd.controller import Controller

    if host not in LOOPBACK:
        _fail(f"--host {host!r}: the catcher keeps customer e-mail; it only listens on loopback (127.0.0.1, ::1)")
    box = mailbox.Maildir(str(mailbox_dir()), factory=None, create=True)

    class Keep:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            received = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            header = (f"X-CMP-Received: {received}\r\nX-CMP-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n").encode()
            box.add(header + envelope.original_content)
            return "250 OK: kept by the cmp-pipelines SMTP catcher"

    controller = Controller(Keep(), hostname=host, port=port)
    try:
        controller.start()
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc}")
    click.echo(f"SMTP catcher on {host}:{port}, keeping messages in {mailbox_dir()} (Ctrl-C stops it)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
