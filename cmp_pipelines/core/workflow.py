"""The workflow dispatcher: every workflow event gets its configured action exactly once.

`workflow_dispatch` holds one row per event (its key): PENDING until the action is done (DONE), retried with
backoff on failure, FAILED when the attempts run out or no action is configured (`events retry` puts it back).
A communication is queued in the e-mail outbox under a message id derived from the event id in the same
transaction that marks the event DONE, so a second dispatcher, a re-run or a crash in between queues nothing
twice. A webhook carries `Idempotency-Key: cmp-event-<id>` so a receiver can drop the repeat a crash between its
answer and our DONE would cause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import httpx

from cmp_pipelines.core import outbox
from cmp_pipelines.core.config_workflow import WorkflowActions
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.templates import TemplateError, Templates

STATUSES = ("PENDING", "DONE", "FAILED")
WEBHOOK_TIMEOUT = 10.0


@dataclass
class DispatchReport:
    registered: int = 0
    done: dict[str, int] = field(default_factory=dict)  # action -> events done now
    retrying: int = 0
    failed: int = 0
    skipped: int = 0  # communications to accounts without an e-mail address

    def count(self, action: str) -> None:
        self.done[action] = self.done.get(action, 0) + 1


def register_events(con: duckdb.DuckDBPyConnection, actions: WorkflowActions, now: datetime,
                    event_types: list[str] | None = None) -> int:
    """Give every event not yet known (of `event_types`, if given) its action (set-based: a day's events are one
    statement)."""
    con.execute("CREATE TEMP TABLE IF NOT EXISTS wf_rules (event_type VARCHAR, event_code VARCHAR, action VARCHAR, "
                "target VARCHAR)")  # words both stores accept (the dispatcher runs on PostgreSQL too)
    con.execute("DELETE FROM wf_rules")
    con.executemany("INSERT INTO wf_rules VALUES (?, ?, ?, ?)",
                    [[a.event_type, a.event_code, a.action, a.target] for a in actions.actions.values()])
    return con.execute(
        """
        INSERT INTO workflow_dispatch (event_id, action, target, status, attempts, next_attempt_at, last_error,
                                       result, created_at, updated_at)
        SELECT e.event_id, coalesce(x.action, w.action, 'UNCONFIGURED'), coalesce(x.target, w.target),
               CASE coalesce(x.action, w.action) WHEN 'NONE' THEN 'DONE' ELSE
                    CASE WHEN coalesce(x.action, w.action) IS NULL THEN 'FAILED' ELSE 'PENDING' END END,
               0, $now,
               CASE WHEN coalesce(x.action, w.action) IS NULL THEN 'no action is configured for '
                    || e.event_type || '/' || e.event_code || ' in workflow_actions.yaml' END,
               CASE coalesce(x.action, w.action) WHEN 'NONE' THEN 'nothing to do (action none)' END,
               $now, $now
        FROM workflow_events e
        LEFT JOIN wf_rules x ON x.event_type = e.event_type AND x.event_code = e.event_code
        LEFT JOIN wf_rules w ON w.event_type = e.event_type AND w.event_code = '*'
        WHERE NOT EXISTS (SELECT 1 FROM workflow_dispatch d WHERE d.event_id = e.event_id)
          AND (CAST($types AS VARCHAR[]) IS NULL OR e.event_type IN (SELECT unnest(CAST($types AS VARCHAR[]))))
        """,
        {"now": now, "types": event_types},
    ).fetchone()[0]


_DUE = """
WITH due AS (SELECT * FROM workflow_dispatch WHERE status = 'PENDING' AND next_attempt_at <= $now
               AND (CAST($types AS VARCHAR[]) IS NULL OR event_id IN (
                    SELECT event_id FROM workflow_events
                    WHERE event_type IN (SELECT unnest(CAST($types AS VARCHAR[])))))
             ORDER BY event_id LIMIT $limit),
card AS (SELECT transaction_id, amount_minor, currency, invoice_number, due_on, retry_due_on FROM card_transactions
         WHERE transaction_id IN (SELECT e.source_ref FROM workflow_events e JOIN due USING (event_id))),
debit AS (SELECT collection_id, any_value(amount_minor) AS amount_minor, any_value(currency) AS currency,
                 any_value(mandate_id) AS mandate_id, max(retry_due_on) AS retry_due_on
          FROM dd_collections
          WHERE collection_id IN (SELECT e.source_ref FROM workflow_events e JOIN due USING (event_id)) GROUP BY 1),
notice AS (SELECT notice_id, payment_type, amount_minor, currency, invoice_number, mandate_id, collection_on
           FROM collection_notices
           WHERE notice_id IN (SELECT e.source_ref FROM workflow_events e JOIN due USING (event_id)))
SELECT d.event_id, d.action, d.target, d.attempts, e.event_type, e.event_code, e.account_number, e.source_ref,
       e.detail, e.raised_at, e.reason_type, e.reason_code, e.new_payment_type, a.name, a.email,
       minor_to_decimal(coalesce(c.amount_minor, b.amount_minor, n.amount_minor)),
       coalesce(c.currency, b.currency, n.currency, a.currency), coalesce(c.invoice_number, n.invoice_number),
       coalesce(c.retry_due_on, b.retry_due_on)::VARCHAR, m.reference, m.service_user_number,
       n.collection_on::VARCHAR, n.payment_type
FROM due d JOIN workflow_events e USING (event_id)
LEFT JOIN accounts a ON a.account_number = e.account_number
LEFT JOIN card c ON c.transaction_id = e.source_ref
LEFT JOIN debit b ON b.collection_id = e.source_ref
LEFT JOIN notice n ON n.notice_id = e.source_ref AND e.event_type = 'ADVANCE_NOTICE'
LEFT JOIN mandates m ON m.mandate_id = coalesce(b.mandate_id, n.mandate_id, e.source_ref)
ORDER BY d.event_id
"""

_CONTEXT = ("event_id", "action", "target", "attempts", "event_type", "event_code", "account_number", "source_ref",
            "detail", "raised_at", "reason_type", "reason_code", "new_payment_type", "customer_name", "email", "amount",
            "currency", "invoice_number", "retry_on", "mandate_reference", "service_user_number", "collect_on",
            "payment_type")


def context(row: dict) -> dict:
    """What a template sees: `account`, `event` and, when the event is about one, `payment` and `mandate`.
    `event.reason_type`/`event.reason_code` are the configured reason of the rejection or mandate revision code;
    `payment.new_type` is the payment type the event moved the account to (None when it did not move it); an
    advance notice adds `payment.collect_on` and `payment.type` (RECURRING_CARD or DIRECT_DEBIT)."""
    return {
        "account": {"number": row["account_number"], "name": row["customer_name"], "email": row["email"]},
        "event": {"id": row["event_id"], "type": row["event_type"], "code": row["event_code"],
                  "source_ref": row["source_ref"], "detail": row["detail"], "reason_type": row["reason_type"],
                  "reason_code": row["reason_code"],
                  "raised_on": row["raised_at"].date().isoformat()},
        "payment": {"amount": row["amount"], "currency": row["currency"], "invoice_number": row["invoice_number"],
                    "retry_on": row["retry_on"], "new_type": row["new_payment_type"],
                    "collect_on": row.get("collect_on"), "type": row.get("payment_type")},
        "mandate": {"reference": row["mandate_reference"], "service_user_number": row["service_user_number"]},
    }


def _done(con, event_id: int, result: str, now: datetime) -> None:
    con.execute("UPDATE workflow_dispatch SET status = 'DONE', attempts = attempts + 1, result = ?, last_error = NULL, "
                "updated_at = ? WHERE event_id = ?", [result, now, event_id])


def _failed(con, row: dict, why: str, actions: WorkflowActions, now: datetime, report: DispatchReport) -> None:
    attempts = row["attempts"] + 1
    status = "FAILED" if attempts >= actions.max_attempts else "PENDING"
    wait = timedelta(minutes=actions.retry_minutes * 2 ** (attempts - 1))
    con.execute("UPDATE workflow_dispatch SET status = ?, attempts = ?, last_error = ?, next_attempt_at = ?, "
                "updated_at = ? WHERE event_id = ?", [status, attempts, why[:1000], now + wait, now, row["event_id"]])
    if status == "FAILED":
        report.failed += 1
    else:
        report.retrying += 1


def dispatch(con: duckdb.DuckDBPyConnection, actions: WorkflowActions, templates: Templates, now: datetime, *,
             limit: int = 1000, post: Callable[..., httpx.Response] = httpx.post,
             event_types: list[str] | None = None) -> DispatchReport:
    """Register new events, then carry out the actions due now (only of `event_types`, if given: e.g. the advance
    notices alone)."""
    report = DispatchReport(registered=register_events(con, actions, now, event_types))
    rows = [dict(zip(_CONTEXT, r, strict=True))
            for r in con.execute(_DUE, {"now": now, "limit": limit, "types": event_types}).fetchall()]
    for row in rows:
        action, event_id = row["action"], row["event_id"]
        if action == "COMMUNICATION":
            if not row["email"]:
                _done(con, event_id, "not sent: the account has no e-mail address", now)
                report.skipped += 1
                continue
            try:
                rendered = templates.render(row["target"], context(row))
            except TemplateError as exc:
                _failed(con, row, str(exc), actions, now, report)
                continue
            with transaction(con):
                mid, _ = outbox.enqueue(con, kind="COMMUNICATION", key=f"event-{event_id}", recipients=[row["email"]],
                                        subject=rendered.subject, body_text=rendered.text, body_html=rendered.html,
                                        now=now, source_ref=str(event_id), account_number=row["account_number"])
                _done(con, event_id, f"queued e-mail {mid} ({row['target']})", now)
        elif action == "WEBHOOK":
            payload = {"event_id": event_id, "event_type": row["event_type"], "event_code": row["event_code"],
                       "account_number": row["account_number"], "source_ref": row["source_ref"],
                       "detail": row["detail"], "reason_type": row["reason_type"], "reason_code": row["reason_code"],
                       "new_payment_type": row["new_payment_type"], "raised_at": row["raised_at"].isoformat()}
            try:
                response = post(row["target"], json=payload, timeout=WEBHOOK_TIMEOUT,
                                headers={"Idempotency-Key": f"cmp-event-{event_id}"})
            except httpx.HTTPError as exc:
                _failed(con, row, f"webhook {row['target']}: {type(exc).__name__}: {exc}", actions, now, report)
                continue
            if not 200 <= response.status_code < 300:
                _failed(con, row, f"webhook {row['target']} answered HTTP {response.status_code}", actions, now,
                        report)
                continue
            _done(con, event_id, f"webhook answered HTTP {response.status_code}", now)
        elif action == "OPERATOR_TASK":
            with transaction(con):
                con.execute("INSERT INTO operator_tasks (event_id, queue, account_number, summary, created_at) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            [event_id, row["target"], row["account_number"],
                             f"{row['event_type']}/{row['event_code']}: {row['detail']}", now])
                _done(con, event_id, f"operator task opened in queue {row['target']}", now)
        else:
            _failed(con, row, f"unknown action {action!r}", actions, now, report)
            continue
        report.count(action)
    return report


def retry(con: duckdb.DuckDBPyConnection, actions: WorkflowActions, event_ids: list[int], now: datetime) -> int:
    """Put FAILED (or PENDING) events back to PENDING, due now, with the action the configuration gives today."""
    changed = 0
    for event_id in event_ids:
        row = con.execute("SELECT e.event_type, e.event_code, d.status FROM workflow_events e "
                          "JOIN workflow_dispatch d USING (event_id) WHERE event_id = ?", [event_id]).fetchone()
        if row is None:
            raise LookupError(f"event {event_id} does not exist or has not been dispatched yet")
        if row[2] == "DONE":
            raise ValueError(f"event {event_id} is DONE; its action is not repeated")
        configured = actions.action_for(row[0], row[1])
        if configured is None:
            raise ValueError(f"event {event_id}: no action is configured for {row[0]}/{row[1]} in "
                             "workflow_actions.yaml")
        con.execute("UPDATE workflow_dispatch SET status = 'PENDING', attempts = 0, next_attempt_at = ?, "
                    "action = ?, target = ?, last_error = NULL, updated_at = ? WHERE event_id = ?",
                    [now, configured.action, configured.target, now, event_id])
        changed += 1
    return changed


EVENT_COLUMNS = ("event_id", "event_type", "event_code", "account_number", "source_ref", "detail", "reason_type",
                 "reason_code", "new_payment_type", "raised_at", "action", "target", "status", "attempts", "last_error",
                 "result", "updated_at")


def events(con: duckdb.DuckDBPyConnection, *, account: str | None = None, status: str | None = None,
           event_id: int | None = None, limit: int = 100) -> list[dict]:
    """Events with their dispatch state (status NEW: not registered by a dispatcher yet)."""
    rows = con.execute(
        """
        SELECT e.event_id, e.event_type, e.event_code, e.account_number, e.source_ref, e.detail, e.reason_type,
               e.reason_code, e.new_payment_type, e.raised_at, d.action, d.target, coalesce(d.status, 'NEW'),
               coalesce(d.attempts, 0), d.last_error, d.result, d.updated_at
        FROM workflow_events e LEFT JOIN workflow_dispatch d USING (event_id)
        WHERE ($account IS NULL OR e.account_number = $account)
          AND ($status IS NULL OR coalesce(d.status, 'NEW') = $status)
          AND ($event_id IS NULL OR e.event_id = $event_id)
        ORDER BY e.event_id DESC LIMIT $limit
        """,
        {"account": account, "status": status, "event_id": event_id, "limit": limit},
    ).fetchall()
    return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]
