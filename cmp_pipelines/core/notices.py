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
from cmp_pipelines.core.rules import settled_sql

EVENT_TYPE = "ADVANCE_NOTICE"
# payment type -> (notice id prefix, event code)
KINDS = {"RECURRING_CARD": ("CARD", "CARD_COLLECTION"), "DIRECT_DEBIT": ("DD", "DD_COLLECTION")}

# Accounts a notice is raised for: paying by the type (a card on file; a mandate not cancelled or failed; the
# collection itself still needs the mandate ACTIVE), with the day their suspension ends. `{among}` names a table or
# CTE of the accounts asked about: the payers are looked up only for those (a day with nothing to notice looks up
# none, instead of joining every account to its card or mandates).
PAYERS_SQL = {
    "RECURRING_CARD": """
        SELECT a.account_number, NULL::VARCHAR AS mandate_id, a.suspended_until FROM accounts a
        WHERE a.payment_type = 'RECURRING_CARD' AND a.account_number IN (SELECT account_number FROM {among})
          AND EXISTS (SELECT 1 FROM payment_cards c WHERE c.account_number = a.account_number)""",
    "DIRECT_DEBIT": """
        SELECT a.account_number, min(m.mandate_id) AS mandate_id, any_value(a.suspended_until) AS suspended_until
        FROM accounts a JOIN mandates m USING (account_number)
        WHERE a.payment_type = 'DIRECT_DEBIT' AND m.status NOT IN ('CANCELLED', 'FAILED')
          AND a.account_number IN (SELECT account_number FROM {among})
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
    """Notices for every open invoice issued by `day` on a paying account and not yet noticed for this type, each with
    its ADVANCE_NOTICE event (raised in notice order, so event ids follow notice ids).

    The notice's date is the invoice's due date, or `earliest` (the first day the notice period allows), or the
    end of the account's suspension, whichever is latest, moved by `snap` (direct debit: to a Bacs working day).
    `snap` runs once per distinct date, not per invoice.

    Cheap when there is nothing to do (most days): the invoices without a notice are found first (one hash anti-join),
    and only those are joined to the payers and the ledger. Events go only to the notices raised here: a notice
    without an event that was not raised here is history (demo and benchmark seeds) whose message has left; an event
    for it would send the customer a second advance notice."""
    prefix, code = _kind(payment_type)
    currency = CURRENCIES[payment_type]
    with transaction(con):
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE notice_unnoticed AS
            SELECT i.invoice_number, i.account_number, i.currency, i.due_on, i.amount_minor FROM invoices i
            WHERE i.issued_on <= $day {"AND i.currency = '" + currency + "'" if currency else ""}
              AND i.account_number IN (SELECT account_number FROM accounts WHERE payment_type = $ptype)
              AND NOT EXISTS (SELECT 1 FROM collection_notices n
                              WHERE n.payment_type = $ptype AND n.invoice_number = i.invoice_number)
            """,
            {"day": day, "ptype": payment_type},
        )
        count, total = 0, 0
        if con.execute("SELECT count(*) FROM notice_unnoticed").fetchone()[0]:
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE notice_candidates AS
                WITH payers AS ({PAYERS_SQL[payment_type].format(among="notice_unnoticed")}),
                     settled AS ({settled_sql("notice_unnoticed")})
                SELECT 'AN-{prefix}-' || u.invoice_number AS notice_id, u.account_number, u.invoice_number,
                       p.mandate_id, u.amount_minor + coalesce(s.settled_minor, 0) AS amount_minor, u.currency,
                       greatest(u.due_on, $earliest::DATE, coalesce(p.suspended_until, $earliest::DATE)) AS planned
                FROM notice_unnoticed u JOIN payers p USING (account_number) LEFT JOIN settled s USING (invoice_number)
                WHERE u.amount_minor + coalesce(s.settled_minor, 0) > 0
                """,
                {"earliest": earliest},
            )
            count, total = con.execute("SELECT count(*), coalesce(sum(amount_minor), 0) FROM notice_candidates"
                                       ).fetchone()
            if count:
                _insert(con, payment_type, code, day, now, snap)
            con.execute("DROP TABLE notice_candidates")
        con.execute("DROP TABLE notice_unnoticed")
    return Raised(count, total)


def _insert(con: duckdb.DuckDBPyConnection, payment_type: str, code: str, day: date, now: datetime,
            snap: Callable[[date], date] | None) -> None:
    """The candidates' events (ids drawn in notice order), then the notices naming them: no UPDATE of the notices."""
    planned = [d for (d,) in con.execute("SELECT DISTINCT planned FROM notice_candidates").fetchall()]
    con.execute("CREATE OR REPLACE TEMP TABLE notice_dates (planned DATE, collection_on DATE)")
    con.executemany("INSERT INTO notice_dates VALUES (?, ?)", [[d, snap(d) if snap else d] for d in planned])
    con.execute("CREATE OR REPLACE TEMP TABLE notice_new AS SELECT c.*, d.collection_on "
                "FROM notice_candidates c JOIN notice_dates d USING (planned)")
    con.execute(
        """
        INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
        SELECT $event_type, $code, account_number, notice_id,
               'collect ' || minor_to_decimal(amount_minor) || ' ' || currency || ' on ' || collection_on
               || ' for invoice ' || invoice_number, $now
        FROM notice_new ORDER BY notice_id
        """,
        {"event_type": EVENT_TYPE, "code": code, "now": now},
    )
    con.execute(
        """
        INSERT INTO collection_notices (notice_id, payment_type, account_number, invoice_number, mandate_id,
            amount_minor, currency, collection_on, raised_on, event_id, status, created_at)
        SELECT c.notice_id, $ptype, c.account_number, c.invoice_number, c.mandate_id, c.amount_minor, c.currency,
               c.collection_on, $day, e.event_id, 'RAISED', $now
        FROM notice_new c
        JOIN (SELECT event_id, source_ref FROM workflow_events WHERE event_type = $event_type AND raised_at = $now) e
          ON e.source_ref = c.notice_id
        """,
        {"ptype": payment_type, "day": day, "now": now, "event_type": EVENT_TYPE},
    )
    con.execute("DROP TABLE notice_new")
    con.execute("DROP TABLE notice_dates")


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
        WITH ok AS ({collectable_sql(payment_type)}),
             held AS (SELECT i.invoice_number, i.account_number, i.amount_minor FROM invoices i
                      WHERE i.due_on <= $day AND i.invoice_number NOT IN (SELECT invoice_number FROM ok)
                        AND i.invoice_number NOT IN ({collected_sql})),
             payers AS ({PAYERS_SQL[payment_type].format(among="held")}), settled AS ({settled_sql("held")}),
             outstanding AS (SELECT h.invoice_number, h.account_number,
                                    h.amount_minor + coalesce(s.settled_minor, 0) AS outstanding_minor
                             FROM held h LEFT JOIN settled s USING (invoice_number))
        SELECT count(*), coalesce(sum(o.outstanding_minor), 0), count(*) FILTER (n.notice_id IS NULL),
               count(*) FILTER (n.status = 'RAISED'), count(*) FILTER (n.status = 'SENT')
        FROM outstanding o JOIN payers p USING (account_number)
        LEFT JOIN collection_notices n ON n.payment_type = $ptype AND n.invoice_number = o.invoice_number
        WHERE o.outstanding_minor > 0
        """,
        {"day": day, "notice_cutoff": notice_cutoff, "ptype": payment_type},
    ).fetchone()
    return Waiting(*row)
