"""Advance notice of card and direct-debit collections: the customer is told the amount and date before the money
is taken (the seed's condition for recurring card payments; the Direct Debit Guarantee's notice for Bacs).

A daily step of each collecting job raises one notice per payment type and invoice (`AN-<CARD|DD>-<invoice>`,
UNIQUE, so a re-run raises nothing twice) with an ADVANCE_NOTICE workflow event; the dispatcher turns the event
into the configured communication (template `advance_notice`). A notice becomes SENT when that message has left
(the outbox's SENT time; for a webhook or an operator task, the time the dispatcher completed it). An account
without an e-mail address gets no message, so its notice stays RAISED and its invoices wait: counted by `waiting`,
never lost. Each flow's selection takes a new payment only through `collectable_sql`: a notice SENT by the cutoff
(the notice period before the collection day), whose date has come, and never more than the notice's amount.
Retries and re-presentations are announced by their own decline or return communications, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import duckdb

from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.rules import OUTSTANDING_SQL

EVENT_TYPE = "ADVANCE_NOTICE"
# payment type -> (notice id prefix, event code)
KINDS = {"RECURRING_CARD": ("CARD", "CARD_COLLECTION"), "DIRECT_DEBIT": ("DD", "DD_COLLECTION")}

# Accounts a notice is raised for: paying by the type (a card on file; a mandate not cancelled or failed; the
# collection itself still needs the mandate ACTIVE), with the day their suspension ends.
PAYERS_SQL = {
    "RECURRING_CARD": """
        SELECT a.account_number, NULL::VARCHAR AS mandate_id, a.suspended_until FROM accounts a
        WHERE a.payment_type = 'RECURRING_CARD'
          AND EXISTS (SELECT 1 FROM payment_cards c WHERE c.account_number = a.account_number)""",
    "DIRECT_DEBIT": """
        SELECT a.account_number, min(m.mandate_id) AS mandate_id, any_value(a.suspended_until) AS suspended_until
        FROM accounts a JOIN mandates m USING (account_number)
        WHERE a.payment_type = 'DIRECT_DEBIT' AND m.status NOT IN ('CANCELLED', 'FAILED')
        GROUP BY a.account_number""",
}
CURRENCIES = {"RECURRING_CARD": None, "DIRECT_DEBIT": "GBP"}  # Bacs collects sterling only


def _kind(payment_type: str) -> tuple[str, str]:
    if payment_type not in KINDS:
        raise ValueError(f"advance notice: payment type must be one of {', '.join(KINDS)}, got {payment_type!r}")
    return KINDS[payment_type]


def collectable_sql(payment_type: str) -> str:
    """Invoices whose notice allows collecting on $day: SENT before $notice_cutoff, its date come; `notice_minor`
    caps the amount."""
    _kind(payment_type)
    return f"""
        SELECT invoice_number, amount_minor AS notice_minor FROM collection_notices
        WHERE payment_type = '{payment_type}' AND status = 'SENT' AND sent_at < $notice_cutoff
          AND collection_on <= $day"""


def cutoff(latest_notice_day: date) -> datetime:
    """A notice counts when sent on or before `latest_notice_day` (UTC): the instant that day ends."""
    return datetime.combine(latest_notice_day + timedelta(days=1), time.min, UTC)


@dataclass
class Raised:
    count: int
    total_minor: int


def raise_notices(con: duckdb.DuckDBPyConnection, payment_type: str, day: date, earliest: date, now: datetime,
                  snap: Callable[[date], date] | None = None) -> Raised:
    """Notices for every open invoice issued by `day` on a paying account and not yet noticed for this type.

    The notice's date is the invoice's due date, or `earliest` (the first day the notice period allows), or the
    end of the account's suspension, whichever is latest, moved by `snap` (direct debit: to a Bacs working day).
    `snap` runs once per distinct date, not per invoice."""
    prefix, code = _kind(payment_type)
    currency = CURRENCIES[payment_type]
    params = {"day": day, "earliest": earliest, "ptype": payment_type, "now": now, "code": code,
              "event_type": EVENT_TYPE}
    with transaction(con):
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE notice_candidates AS
            WITH payers AS ({PAYERS_SQL[payment_type]}), outstanding AS ({OUTSTANDING_SQL})
            SELECT 'AN-{prefix}-' || o.invoice_number AS notice_id, o.account_number, o.invoice_number, p.mandate_id,
                   o.outstanding_minor AS amount_minor, o.currency,
                   greatest(o.due_on, $earliest::DATE, coalesce(p.suspended_until, $earliest::DATE)) AS planned
            FROM outstanding o JOIN payers p USING (account_number)
            WHERE o.issued_on <= $day AND o.outstanding_minor > 0
              {"AND o.currency = '" + currency + "'" if currency else ""}
              AND NOT EXISTS (SELECT 1 FROM collection_notices n
                              WHERE n.payment_type = $ptype AND n.invoice_number = o.invoice_number)
            """,
            {"day": day, "earliest": earliest, "ptype": payment_type},
        )
        planned = [d for (d,) in con.execute("SELECT DISTINCT planned FROM notice_candidates").fetchall()]
        con.execute("CREATE OR REPLACE TEMP TABLE notice_dates (planned DATE, collection_on DATE)")
        if planned:
            con.executemany("INSERT INTO notice_dates VALUES (?, ?)", [[d, snap(d) if snap else d] for d in planned])
        con.execute(
            """
            INSERT INTO collection_notices (notice_id, payment_type, account_number, invoice_number, mandate_id,
                amount_minor, currency, collection_on, raised_on, status, created_at)
            SELECT c.notice_id, $ptype, c.account_number, c.invoice_number, c.mandate_id, c.amount_minor, c.currency,
                   d.collection_on, $day, 'RAISED', $now
            FROM notice_candidates c JOIN notice_dates d USING (planned)
            """,
            {"ptype": payment_type, "day": day, "now": now},
        )
        con.execute(
            """
            INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
            SELECT $event_type, $code, account_number, notice_id,
                   'collect ' || minor_to_decimal(amount_minor) || ' ' || currency || ' on ' || collection_on
                   || ' for invoice ' || invoice_number, $now
            FROM collection_notices WHERE payment_type = $ptype AND event_id IS NULL ORDER BY notice_id
            """,
            {k: params[k] for k in ("event_type", "code", "ptype", "now")},
        )
        con.execute(
            "UPDATE collection_notices SET event_id = e.event_id FROM workflow_events e "
            "WHERE e.event_type = $event_type AND e.source_ref = collection_notices.notice_id "
            "AND collection_notices.event_id IS NULL",
            {"event_type": EVENT_TYPE},
        )
        count, total = con.execute("SELECT count(*), coalesce(sum(amount_minor), 0) FROM notice_candidates"
                                   ).fetchone()
        con.execute("DROP TABLE notice_candidates")
        con.execute("DROP TABLE notice_dates")
    return Raised(count, total)


def refresh_sent(con: duckdb.DuckDBPyConnection) -> int:
    """Mark SENT the notices whose message has left (set-based; the dispatcher calls it after delivering)."""
    return con.execute(
        """
        UPDATE collection_notices SET status = 'SENT', sent_at = g.given_at
        FROM (SELECT d.event_id, CASE WHEN d.action = 'COMMUNICATION' THEN o.sent_at ELSE d.updated_at END AS given_at
              FROM workflow_dispatch d
              LEFT JOIN email_outbox o ON o.kind = 'COMMUNICATION' AND o.source_ref = d.event_id::VARCHAR
                                         AND o.status = 'SENT'
              WHERE d.status = 'DONE' AND d.action IN ('COMMUNICATION', 'WEBHOOK', 'OPERATOR_TASK')) g
        WHERE g.event_id = collection_notices.event_id AND collection_notices.status = 'RAISED'
          AND g.given_at IS NOT NULL
        """
    ).fetchone()[0]


@dataclass
class Waiting:
    """Invoices due by the day that the notice rule holds back: no notice yet, notice not sent, or sent too late
    (or dated later) for this day."""

    count: int
    total_minor: int
    no_notice: int
    not_sent: int
    too_recent: int


def waiting(con: duckdb.DuckDBPyConnection, payment_type: str, day: date, notice_cutoff: datetime,
            collected_sql: str) -> Waiting:
    """`collected_sql` selects the invoice numbers the flow has already taken (they are not waiting)."""
    _kind(payment_type)
    row = con.execute(
        f"""
        WITH payers AS ({PAYERS_SQL[payment_type]}), outstanding AS ({OUTSTANDING_SQL}),
             ok AS ({collectable_sql(payment_type)})
        SELECT count(*), coalesce(sum(o.outstanding_minor), 0), count(*) FILTER (n.notice_id IS NULL),
               count(*) FILTER (n.status = 'RAISED'), count(*) FILTER (n.status = 'SENT')
        FROM outstanding o JOIN payers p USING (account_number)
        LEFT JOIN collection_notices n ON n.payment_type = $ptype AND n.invoice_number = o.invoice_number
        WHERE o.due_on <= $day AND o.outstanding_minor > 0
          AND o.invoice_number NOT IN (SELECT invoice_number FROM ok)
          AND o.invoice_number NOT IN ({collected_sql})
        """,
        {"day": day, "notice_cutoff": notice_cutoff, "ptype": payment_type},
    ).fetchone()
    return Waiting(*row)
