"""How a rejected recurring payment is handled by its configured rejection code: one set of rules for
declined card payments and returned direct debits (the Recurring Payments Rejections job serves both).

- SOFT with retries left: RETRY_SCHEDULED, the account kept out of automated payments until the retry date,
  the payment retried then (a card payment on the extract, a direct debit re-presented with `18`);
- SOFT on its last attempt: RETRIES_EXHAUSTED, treated as a hard decline, cancellation event;
- SOFT with retries left on an account leaving the payment method in the same file: RETRY_CANCELLED;
- HARD: HARD_DECLINE, the payment type reverts to the configured default where the account can pay that way
  (a card on file for RECURRING_CARD, an active mandate for DIRECT_DEBIT, never the type that just failed), else
  to MANUAL with the reason in the history, the event and the report; refund event;
- unknown code: UNCONFIGURED_CODE, a configuration error: reversed (the money was not taken), never retried.
Every fragment reads a rejection table with batch_id, position, account_number, reason_code, outcome, attempt
and retry_due_on; `rejections` names it and `payment` the column naming the rejected payment.

`apply` is the one engine both jobs run, parameterised by their tables (`RejectionTables`): the reversal of
the rejected payments' postings (through core.ledger, checked "already posted" the same way), the payments'
new status and retry date, suspensions, payment-type reversions, events and communications, in ONE
transaction with the reversal batch. File parsing and anything only one job does (ARUDD's mandate actions)
stay in the flows and come in as `after` statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import duckdb

from cmp_pipelines.core.ledger import (
    PostResult,
    child_batch_id,
    first_unposted,
    posted_batch,
    record_posting_batch,
    reverse,
    reverse_to_postgres,
    used_params,
)

REVERSED_OUTCOMES = ("RETRY_SCHEDULED", "RETRIES_EXHAUSTED", "RETRY_CANCELLED", "HARD_DECLINE", "UNCONFIGURED_CODE")
REVERSED_SQL = ", ".join(f"'{o}'" for o in REVERSED_OUTCOMES)
REVERTING_SQL = "'RETRIES_EXHAUSTED', 'HARD_DECLINE'"

# Over a row with problem_code, known_code, decline, attempt, retries, suspension_days; $day is the business day.
OUTCOME_SQL = """CASE WHEN problem_code IS NOT NULL THEN 'REJECTED'
            WHEN known_code IS NULL THEN 'UNCONFIGURED_CODE'
            WHEN decline = 'HARD' THEN 'HARD_DECLINE'
            WHEN attempt <= retries THEN 'RETRY_SCHEDULED'
            ELSE 'RETRIES_EXHAUSTED' END"""
RETRY_DUE_SQL = """CASE WHEN problem_code IS NULL AND decline = 'SOFT' AND attempt <= retries
            THEN $day + suspension_days::INTEGER END"""


def status_after_sql(unconfigured: str) -> str:
    """The rejected payment's new status, from the rejection row `r`."""
    return f"""CASE r.outcome WHEN 'RETRY_SCHEDULED' THEN 'SOFT_DECLINED'
                              WHEN 'RETRIES_EXHAUSTED' THEN 'CANCELLED'
                              WHEN 'RETRY_CANCELLED' THEN 'CANCELLED'
                              WHEN 'HARD_DECLINE' THEN 'HARD_DECLINED'
                              ELSE '{unconfigured}' END"""


def cancel_retries_sql(rejections: str, payment_type: str, retryable: str = "TRUE") -> str:
    """A retry is only scheduled on an account that still pays this way after this file."""
    return f"""
        UPDATE {rejections} r SET outcome = 'RETRY_CANCELLED', retry_due_on = NULL
        WHERE r.batch_id = $batch_id AND r.outcome = 'RETRY_SCHEDULED' AND {retryable}
          AND (r.account_number IN (SELECT account_number FROM accounts WHERE payment_type <> '{payment_type}')
               OR r.account_number IN (SELECT account_number FROM {rejections} WHERE batch_id = $batch_id
                                       AND outcome IN ({REVERTING_SQL})))
    """


def suspend_accounts_sql(rejections: str) -> str:
    """Soft declines keep the account out of automated payments until the latest retry date."""
    return f"""
        UPDATE accounts a SET suspended_until = greatest(coalesce(a.suspended_until, s.until), s.until)
        FROM (SELECT account_number, max(retry_due_on) AS until FROM {rejections}
              WHERE batch_id = $batch_id AND outcome = 'RETRY_SCHEDULED' GROUP BY 1) s
        WHERE a.account_number = s.account_number
    """


FALLBACK_TYPE = "MANUAL"
# A card is usable when it is on file and has not expired by $month ('YYYY-MM'); expiry is MM/YY or YYYY-MM, and
# an unknown expiry counts as usable (the provider decides). A mandate is usable when it is ACTIVE.
USABLE_CARD_SQL = """EXISTS (SELECT 1 FROM payment_cards pc WHERE pc.account_number = {account}
    AND (pc.expiry IS NULL OR CASE WHEN pc.expiry LIKE '__/__' THEN '20' || substr(pc.expiry, 4, 2) || '-'
                                                                      || substr(pc.expiry, 1, 2)
                                   ELSE pc.expiry END >= $month))"""
ACTIVE_MANDATE_SQL = """EXISTS (SELECT 1 FROM mandates md WHERE md.account_number = {account}
    AND md.status = 'ACTIVE')"""


def reverted_type_sql(failed_type: str, account: str = "a.account_number") -> tuple[str, str]:
    """(new type, note) SQL for an account leaving `failed_type` after a hard decline: the configured
    $default_type when the account can pay that way, else MANUAL, the note saying why. The default is never the
    type that just failed (a declined card is not asked again, a returned debit not re-collected by default)."""
    card, mandate = USABLE_CARD_SQL.format(account=account), ACTIVE_MANDATE_SQL.format(account=account)
    fallback = f"""CASE WHEN $default_type = '{failed_type}'
                THEN 'the default ' || $default_type || ' is the payment type that just failed'
            WHEN $default_type = 'RECURRING_CARD' AND NOT {card}
                THEN 'the default RECURRING_CARD needs a card on file that has not expired; the account has none'
            WHEN $default_type = 'DIRECT_DEBIT' AND NOT {mandate}
                THEN 'the default DIRECT_DEBIT needs an active mandate; the account has none' END"""
    return f"CASE WHEN ({fallback}) IS NULL THEN $default_type ELSE '{FALLBACK_TYPE}' END", fallback


def revert_payment_type_sql(rejections: str, payment: str, payment_type: str, cause: str) -> tuple[str, ...]:
    """Hard declines (and exhausted retries) move the account off `payment_type`, to $default_type where it can
    pay that way (else MANUAL, `reverted_type_sql`), with the history row first; every reverting rejection then
    names the type its account pays by now (`new_payment_type`) for the events, communications and reports."""
    new_type, note = reverted_type_sql(payment_type)
    # Joined to the rejections by row id, in row-id order, not by account: DuckDB applies an UPDATE ... FROM row by
    # row in the join's output order, and a hash join on the account hands the rows over in the accounts' order:
    # 50,000 hard declines took 0.75-0.85 s of a 2.7 s apply that way; in the table's own order apply is 1.95 s
    # (same rows and values). `unchanged` reads its one value by a correlated subquery, for the same reason.
    decide = f"""
        UPDATE {rejections} r SET new_payment_type = t.new_type, payment_type_note = t.note
        FROM (SELECT x.rowid AS row_id, d.new_type, d.note FROM {rejections} x
              JOIN (SELECT a.account_number, {new_type} AS new_type, {note} AS note FROM accounts a
                    WHERE a.payment_type = '{payment_type}' AND a.account_number IN
                          (SELECT account_number FROM {rejections} WHERE batch_id = $batch_id
                           AND outcome IN ({REVERTING_SQL}))) d USING (account_number)
              WHERE x.batch_id = $batch_id AND x.outcome IN ({REVERTING_SQL}) ORDER BY row_id) t
        WHERE r.rowid = t.row_id
    """
    reverting = f"""
        SELECT account_number, any_value(new_payment_type) AS new_type, any_value(payment_type_note) AS note,
               string_agg(reason_code || ' on ' || {payment}, ', ' ORDER BY position) AS why
        FROM {rejections} WHERE batch_id = $batch_id AND outcome IN ({REVERTING_SQL})
          AND new_payment_type IS NOT NULL GROUP BY 1
    """
    history = f"""
        INSERT INTO payment_type_changes (account_number, old_type, new_type, cause, changed_at)
        SELECT a.account_number, a.payment_type, v.new_type,
               '{cause} ' || v.why || coalesce('; not ' || $default_type || ': ' || v.note, ''), $now
        FROM accounts a JOIN ({reverting}) v USING (account_number)
        WHERE a.payment_type = '{payment_type}'
    """
    update = f"""
        UPDATE accounts a SET payment_type = v.new_type
        FROM ({reverting}) v WHERE a.account_number = v.account_number AND a.payment_type = '{payment_type}'
    """
    unchanged = f"""
        UPDATE {rejections} r
        SET new_payment_type = (SELECT a.payment_type FROM accounts a WHERE a.account_number = r.account_number)
        WHERE r.batch_id = $batch_id AND r.outcome IN ({REVERTING_SQL}) AND r.new_payment_type IS NULL
          AND r.account_number IN (SELECT account_number FROM accounts)
    """
    return decide, history, update, unchanged


def events_sql(rejections: str, payment: str, unconfigured_event: tuple[str, str], detail: str) -> str:
    """The configured workflow event of each handled rejection; `detail` is an SQL expression over `r`."""
    def pick(field: str, fallback: str) -> str:
        return f"""CASE r.outcome WHEN 'RETRY_SCHEDULED' THEN k.retry_event_{field}
                                  WHEN 'RETRIES_EXHAUSTED' THEN k.cancellation_event_{field}
                                  WHEN 'RETRY_CANCELLED' THEN k.cancellation_event_{field}
                                  WHEN 'HARD_DECLINE' THEN k.refund_event_{field}
                                  ELSE '{fallback}' END"""

    return f"""
        INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at,
                                     reason_type, reason_code, new_payment_type)
        SELECT e.event_type, e.event_code, r.account_number, r.{payment},
               r.outcome || ': reason ' || r.reason_code || coalesce(' (' || k.description || ', ' || k.reason_type
               || '/' || k.reason_code || ')', '') || {detail}
               || coalesce(', account now pays by ' || r.new_payment_type, '')
               || coalesce(' (not ' || $default_type || ': ' || r.payment_type_note || ')', ''), $now,
               k.reason_type, k.reason_code, r.new_payment_type
        FROM {rejections} r LEFT JOIN config_rejection_codes k ON k.code = r.reason_code,
        LATERAL (SELECT {pick('type', unconfigured_event[0])} AS event_type,
                        {pick('code', unconfigured_event[1])} AS event_code) e
        WHERE r.batch_id = $batch_id AND r.outcome IN ({REVERSED_SQL}) AND e.event_code IS NOT NULL
        ORDER BY r.position
    """


@dataclass(frozen=True)
class RejectionTables:
    """What differs between the card and the direct-debit rejections jobs: tables, names and wording."""

    feed: str
    load_kind: str  # batches.kind of a loaded rejection file (CARD_REJECTIONS, DD_RETURNS)
    reversal_kind: str  # batches.kind of its reversal batch, and the reversal postings' kind
    reversal_asset: str  # what to materialise when the reversal batch is missing
    rejections: str  # card_rejections, dd_returns
    payments: str  # card_transactions, dd_collections
    payment: str  # the column both share naming the rejected payment
    payment_type: str  # the payment type a rejection can revert (RECURRING_CARD, DIRECT_DEBIT)
    revert_cause: str
    unconfigured_status: str  # the payment's status when its rejection code is not configured
    unconfigured_event: tuple[str, str]
    event_detail: str  # SQL over `r`, appended to each event's detail
    already_handled: tuple[str, str]  # problem code and SQL message (over r and p) for a payment handled since
    ledger_source: str  # the payments' ledger key source (card, dd)
    reversal_sql: str  # SELECT over `r` (the handled rejections, $batch_id) joined to the payments: the ledger
    #                    key's `ledger_refs` and `ledger_event` columns, effective_at, payment and business_date
    ledger_refs: Sequence[str]
    ledger_event: str
    unposted_message: str  # {payment} {day}: a reversal that must wait for its payment's posting batch
    communication_sql: str
    retryable: str = "TRUE"  # SQL over `r`: which rejections may be retried at all

    @property
    def handled(self) -> str:
        return f"r.batch_id = $batch_id AND r.outcome IN ({REVERSED_SQL})"


def record_loaded(con: duckdb.DuckDBPyConnection, t: RejectionTables, batch_id: str, partner: str, file_id: str,
                  now: datetime) -> None:
    """The batch row of a classified rejection file: its reversed (handled) count and amount, its rejects."""
    con.execute(
        f"""
        INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at,
                             record_count, total_minor, accepted_count, rejected_count)
        SELECT ?, ?, ?, ?, ?, 'LOADED', ?, count(*),
               coalesce(sum(amount_minor) FILTER (outcome IN ({REVERSED_SQL})), 0),
               count(*) FILTER (outcome IN ({REVERSED_SQL})), count(*) FILTER (outcome = 'REJECTED')
        FROM {t.rejections} WHERE batch_id = ?
        """,
        [batch_id, t.load_kind, t.feed, partner, file_id, now, batch_id],
    )


def reversal_batch_id(con: duckdb.DuckDBPyConnection, t: RejectionTables, load_batch: str) -> str:
    return child_batch_id(con, load_batch, t.reversal_kind)


def reversal(con: duckdb.DuckDBPyConnection, t: RejectionTables, load_batch: str) -> PostResult:
    """The reversal batch an earlier `apply` recorded."""
    return posted_batch(con, reversal_batch_id(con, t, load_batch), t.reversal_asset)


def apply(con: duckdb.DuckDBPyConnection, t: RejectionTables, *, load_batch: str, partner: str, file_id: str,
          now: datetime, default_type: str, day: date, after: Sequence[str] = (),
          recheck_after: Sequence[str] = (), pg=None) -> PostResult | None:
    """Handle a loaded rejection file once, in ONE transaction the caller opens; None when it was applied
    before. `recheck_after` runs after the re-check (before anything is posted), `after` last.

    On PostgreSQL `con` is a scratch holding what the caller pulled under its row locks (the payments, their
    accounts, cards and postings) and `pg` the open transaction (an ADBC connection) the reversals are also posted
    into (`core.ledger.reverse_to_postgres`, the same rows); the caller pushes the rest of what this wrote."""
    status = con.execute("SELECT status FROM batches WHERE batch_id = ?", [load_batch]).fetchone()[0]
    if status == "APPLIED":
        return None
    params = {"batch_id": load_batch, "now": now, "default_type": default_type, "day": day,
              "month": day.strftime("%Y-%m"), "reversal": reversal_batch_id(con, t, load_batch)}

    def run(sql: str) -> None:
        con.execute(sql, used_params(sql, params))

    run(f"""
        UPDATE {t.rejections} r SET outcome = 'REJECTED', decline = NULL, retry_due_on = NULL,
            problem_code = '{t.already_handled[0]}', problem = {t.already_handled[1]}
        FROM {t.payments} p
        WHERE r.{t.payment} = p.{t.payment} AND {t.handled} AND p.status <> 'EXTRACTED'
    """)
    for statement in recheck_after:
        run(statement)
    missing = first_unposted(con, t.reversal_sql, "payment, business_date", source=t.ledger_source,
                             key=(*t.ledger_refs, t.ledger_event), params=params)
    if missing:
        raise LookupError(t.unposted_message.format(payment=missing[0], day=missing[1]))
    run(cancel_retries_sql(t.rejections, t.payment_type, t.retryable))
    if pg is not None:
        reverse_to_postgres(con, pg, t.reversal_sql, source=t.ledger_source, refs=t.ledger_refs,
                            event=t.ledger_event, kind=t.reversal_kind, batch_id=params["reversal"], now=now,
                            params=params)
    reverse(con, t.reversal_sql, source=t.ledger_source, refs=t.ledger_refs, event=t.ledger_event,
            kind=t.reversal_kind, batch_id=params["reversal"], now=now, params=params)
    run(f"""
        UPDATE {t.payments} p SET status = {status_after_sql(t.unconfigured_status)},
            reason_code = r.reason_code, rejection_batch_id = r.batch_id, retry_due_on = r.retry_due_on
        FROM {t.rejections} r WHERE r.{t.payment} = p.{t.payment} AND {t.handled}
    """)
    run(suspend_accounts_sql(t.rejections))
    for statement in revert_payment_type_sql(t.rejections, t.payment, t.payment_type, t.revert_cause):
        run(statement)
    run(events_sql(t.rejections, t.payment, t.unconfigured_event, t.event_detail))
    run(t.communication_sql)
    for statement in after:
        run(statement)
    posted = record_posting_batch(con, batch_id=params["reversal"], kind=t.reversal_kind, feed=t.feed, now=now,
                                  posted_before=0, partner=partner, source_file_id=file_id,
                                  parent_batch_id=load_batch)
    con.execute("UPDATE batches SET status = 'APPLIED', completed_at = ? WHERE batch_id = ?", [now, load_batch])
    return posted
