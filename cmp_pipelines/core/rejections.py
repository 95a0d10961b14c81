"""How a rejected recurring payment is handled by its configured rejection code: one set of rules for
declined card payments and returned direct debits (the Recurring Payments Rejections job serves both).

- SOFT with retries left: RETRY_SCHEDULED, the account kept out of automated payments until the retry date,
  the payment retried then (a card payment on the extract, a direct debit re-presented with `18`);
- SOFT on its last attempt: RETRIES_EXHAUSTED, treated as a hard decline, cancellation event;
- SOFT with retries left on an account leaving the payment method in the same file: RETRY_CANCELLED;
- HARD: HARD_DECLINE, the payment type reverts to the configured default, refund event;
- unknown code: UNCONFIGURED_CODE, a configuration error: reversed (the money was not taken), never retried.
Every fragment reads a rejection table with batch_id, position, account_number, reason_code, outcome, attempt
and retry_due_on; `rejections` names it and `payment` the column naming the rejected payment.
"""

from __future__ import annotations

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


def revert_payment_type_sql(rejections: str, payment: str, payment_type: str, cause: str) -> tuple[str, str]:
    """Hard declines (and exhausted retries) put the account back on $default_type, with the history row first."""
    reverting = f"""
        SELECT account_number, string_agg(reason_code || ' on ' || {payment}, ', ' ORDER BY position) AS why
        FROM {rejections} WHERE batch_id = $batch_id AND outcome IN ({REVERTING_SQL}) GROUP BY 1
    """
    history = f"""
        INSERT INTO payment_type_changes (account_number, old_type, new_type, cause, changed_at)
        SELECT a.account_number, a.payment_type, $default_type, '{cause} ' || v.why, $now
        FROM accounts a JOIN ({reverting}) v USING (account_number)
        WHERE a.payment_type = '{payment_type}'
    """
    update = f"""
        UPDATE accounts a SET payment_type = $default_type
        FROM ({reverting}) v WHERE a.account_number = v.account_number AND a.payment_type = '{payment_type}'
    """
    return history, update


def events_sql(rejections: str, payment: str, unconfigured_event: tuple[str, str], detail: str) -> str:
    """The configured workflow event of each handled rejection; `detail` is an SQL expression over `r`."""
    def pick(field: str, fallback: str) -> str:
        return f"""CASE r.outcome WHEN 'RETRY_SCHEDULED' THEN k.retry_event_{field}
                                  WHEN 'RETRIES_EXHAUSTED' THEN k.cancellation_event_{field}
                                  WHEN 'RETRY_CANCELLED' THEN k.cancellation_event_{field}
                                  WHEN 'HARD_DECLINE' THEN k.refund_event_{field}
                                  ELSE '{fallback}' END"""

    return f"""
        INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
        SELECT e.event_type, e.event_code, r.account_number, r.{payment},
               r.outcome || ': reason ' || r.reason_code || coalesce(' (' || k.description || ')', '') || {detail}, $now
        FROM {rejections} r LEFT JOIN config_rejection_codes k ON k.code = r.reason_code,
        LATERAL (SELECT {pick('type', unconfigured_event[0])} AS event_type,
                        {pick('code', unconfigured_event[1])} AS event_code) e
        WHERE r.batch_id = $batch_id AND r.outcome IN ({REVERSED_SQL}) AND e.event_code IS NOT NULL
        ORDER BY r.position
    """
