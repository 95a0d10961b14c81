"""Applying the bank's ADDACS advices to mandates by their configured mandate revision code, set-based SQL.

Each advice is checked, matched to our mandate by reference under our service user number, and handled by
its code's action (config/mandate_revision_codes.yaml):
- CANCEL: the mandate is CANCELLED (FAILED when it was never activated); the bank already knows, so no 0C is
  sent; the account leaves direct debit for the default payment type;
- AMEND on a live mandate: the new bank details when given (code 3: a new bank; C: a new branch) replace the
  old and the instruction is lodged again with 0N alone: no 0C ever goes to the old bank;
- AMEND on a cancelled or failed mandate (code R, reinstated): live again, lodged with 0N, and the account
  back on direct debit if it was left on the default payment type.
Anything else is REJECTED with its problem and changes nothing.
"""

from __future__ import annotations

from cmp_pipelines.core.rejections import reverted_type_sql
from cmp_pipelines.core.rules import REASON_CODE_RE, first_problem

REFERENCE_RE = "[A-Z0-9 ./&-]{1,18}"

_PROBLEMS = [
    (f"NOT coalesce(regexp_full_match(reference, '{REFERENCE_RE}'), FALSE)", "INVALID_RECORD",
     "'reference ' || coalesce(q(reference), 'missing') || ' must be 1-18 characters of A-Z 0-9 space . / & -'"),
    (f"NOT coalesce(regexp_full_match(reason_code, '{REASON_CODE_RE}'), FALSE)", "INVALID_RECORD",
     "'reason-code ' || coalesce(q(reason_code), 'missing') || ' must be 1-8 letters or digits'"),
    ("effective_date IS NOT NULL AND effective_day IS NULL", "INVALID_RECORD",
     "'effective-date ' || q(effective_date) || ' must be a date YYYY-MM-DD'"),
    ("new_sort_code IS NOT NULL AND NOT regexp_full_match(new_sort_code, '[0-9]{6}')", "INVALID_RECORD",
     "'payer-new-sort-code ' || q(new_sort_code) || ' must be 6 digits'"),
    ("new_account_number IS NOT NULL AND NOT regexp_full_match(new_account_number, '[0-9]{8}')", "INVALID_RECORD",
     "'payer-new-account-number ' || q(new_account_number) || ' must be 8 digits'"),
    ("position <> first_position", "DUPLICATE_REFERENCE",
     "'reference ' || q(reference) || ' has an earlier advice in this report (position ' || first_position "
     "|| '); one advice per mandate per report'"),
    ("mandate_id IS NULL", "UNKNOWN_REFERENCE",
     "'no mandate has reference ' || q(reference) || ' under service user ' || $sun"),
    ("known_code IS NULL", "UNKNOWN_CODE",
     "'reason-code ' || q(reason_code) || ' is not configured in config/mandate_revision_codes.yaml'"),
    ("action = 'CANCEL' AND mandate_status IN ('CANCELLED', 'FAILED')", "ALREADY_CANCELLED",
     "'mandate ' || mandate_id || ' is already ' || mandate_status || '; nothing changed'"),
    ("action = 'AMEND' AND (new_sort_code IS NULL) <> (new_account_number IS NULL)", "INVALID_RECORD",
     "'an amendment gives both payer-new-sort-code and payer-new-account-number, or neither'"),
]

# $batch_id, $sun; `raw` is the report's advices (defs/direct_debit/bacs_xml.read_addacs).
CLASSIFY_SQL = f"""
INSERT INTO addacs_advices
WITH parsed AS (
    SELECT raw.*, try_cast(effective_date AS DATE) AS effective_day,
           first(position) OVER (PARTITION BY reference ORDER BY position) AS first_position
    FROM raw
),
matched AS (
    SELECT p.*, m.mandate_id, m.account_number, m.status AS mandate_status, k.code AS known_code, k.action
    FROM parsed p
    LEFT JOIN mandates m ON m.reference = p.reference AND m.service_user_number = $sun
    LEFT JOIN config_mandate_revision_codes k ON k.code = p.reason_code
),
checked AS (
    SELECT *, {first_problem(_PROBLEMS, 1)} AS problem_code, {first_problem(_PROBLEMS, 2)} AS problem FROM matched
)
SELECT $batch_id, position, reference, payer_name, payer_sort_code, payer_account_number, reason_code,
       new_sort_code, new_account_number, effective_day, mandate_id, account_number, action,
       CASE WHEN problem_code IS NOT NULL THEN 'REJECTED'
            WHEN action = 'CANCEL' AND mandate_status = 'SUBMITTED' THEN 'MANDATE_FAILED'
            WHEN action = 'CANCEL' THEN 'MANDATE_CANCELLED'
            WHEN mandate_status IN ('CANCELLED', 'FAILED') THEN 'MANDATE_REINSTATED'
            ELSE 'MANDATE_AMENDED' END,
       problem_code, problem
FROM checked
"""

_NEW_TYPE, _NOTE = reverted_type_sql("DIRECT_DEBIT", "c.account_number")

# Each statement takes $batch_id, $day, $now, $default_type (and $month, the business month 'YYYY-MM'); they run
# in this order in one transaction.
APPLY_SQL = [
    # history first, while the mandates still hold their old status
    """
    INSERT INTO mandate_history
    SELECT a.mandate_id, m.status,
           CASE a.outcome WHEN 'MANDATE_CANCELLED' THEN 'CANCELLED' WHEN 'MANDATE_FAILED' THEN 'FAILED'
                          ELSE 'AMENDMENT_PENDING' END,
           'ADDACS ' || a.reason_code || ' (' || k.name || ')', $now
    FROM addacs_advices a JOIN mandates m USING (mandate_id) JOIN config_mandate_revision_codes k
         ON k.code = a.reason_code
    WHERE a.batch_id = $batch_id AND a.outcome <> 'REJECTED'
    ORDER BY a.position
    """,
    """
    UPDATE mandates m SET status = CASE a.outcome WHEN 'MANDATE_FAILED' THEN 'FAILED' ELSE 'CANCELLED' END,
        pending_instruction = NULL, cancelled_on = coalesce(a.effective_date, $day),
        previous_sort_code = NULL, previous_bank_account = NULL, previous_account_name = NULL
    FROM addacs_advices a
    WHERE a.mandate_id = m.mandate_id AND a.batch_id = $batch_id
      AND a.outcome IN ('MANDATE_CANCELLED', 'MANDATE_FAILED')
    """,
    """
    UPDATE mandates m SET status = 'AMENDMENT_PENDING', pending_instruction = 'NEW',
        sort_code = coalesce(a.new_sort_code, m.sort_code),
        bank_account = coalesce(a.new_account_number, m.bank_account),
        previous_sort_code = NULL, previous_bank_account = NULL, previous_account_name = NULL, cancelled_on = NULL,
        final_collection_requested = FALSE, held_reason = NULL
    FROM addacs_advices a
    WHERE a.mandate_id = m.mandate_id AND a.batch_id = $batch_id
      AND a.outcome IN ('MANDATE_AMENDED', 'MANDATE_REINSTATED')
    """,
    # a cancelled mandate moves a DIRECT_DEBIT account to the configured default where it can pay that way (never
    # DIRECT_DEBIT itself: MANUAL then, core/rejections.reverted_type_sql); a reinstated one moves it back when
    # the last change of its payment type took it off DIRECT_DEBIT and nothing changed it since
    f"""
    INSERT INTO payment_type_changes (account_number, old_type, new_type, cause, changed_at)
    SELECT DISTINCT a.account_number, 'DIRECT_DEBIT', {_NEW_TYPE}, 'ADDACS ' || a.reason_code || ': mandate '
           || a.mandate_id || ' ' || lower(replace(a.outcome, 'MANDATE_', ''))
           || coalesce('; not ' || $default_type || ': ' || {_NOTE}, ''), $now
    FROM addacs_advices a JOIN accounts c USING (account_number)
    WHERE a.batch_id = $batch_id AND a.outcome IN ('MANDATE_CANCELLED', 'MANDATE_FAILED')
      AND c.payment_type = 'DIRECT_DEBIT'
    UNION ALL
    SELECT DISTINCT a.account_number, c.payment_type, 'DIRECT_DEBIT', 'ADDACS ' || a.reason_code || ': mandate '
           || a.mandate_id || ' reinstated', $now
    FROM addacs_advices a JOIN accounts c USING (account_number)
    WHERE a.batch_id = $batch_id AND a.outcome = 'MANDATE_REINSTATED' AND c.payment_type <> 'DIRECT_DEBIT'
      AND (SELECT h.old_type = 'DIRECT_DEBIT' AND h.new_type = c.payment_type FROM payment_type_changes h
           WHERE h.account_number = c.account_number ORDER BY h.changed_at DESC LIMIT 1)
    """,
    """
    UPDATE accounts c SET payment_type = h.new_type
    FROM (SELECT DISTINCT ON (account_number) account_number, old_type, new_type FROM payment_type_changes
          WHERE changed_at = $now AND cause LIKE 'ADDACS %'
            AND account_number IN (SELECT account_number FROM addacs_advices WHERE batch_id = $batch_id)
          ORDER BY account_number, new_type = 'DIRECT_DEBIT') h
    WHERE h.account_number = c.account_number AND c.payment_type = h.old_type
    """,
    """
    INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at,
                                 reason_type, reason_code, new_payment_type)
    SELECT k.event_type, k.event_code, a.account_number, a.mandate_id,
           a.outcome || ': ADDACS ' || a.reason_code || ' (' || k.name || ', ' || k.reason_type || '/' || k.reason_code
           || ')' || coalesce(', new bank details ' || a.new_sort_code || ' ' || a.new_account_number, '')
           || coalesce(', effective ' || a.effective_date, ''), $now,
           k.reason_type, k.reason_code,
           CASE WHEN a.outcome IN ('MANDATE_CANCELLED', 'MANDATE_FAILED', 'MANDATE_REINSTATED') THEN c.payment_type END
    FROM addacs_advices a JOIN config_mandate_revision_codes k ON k.code = a.reason_code
    LEFT JOIN accounts c ON c.account_number = a.account_number
    WHERE a.batch_id = $batch_id AND a.outcome <> 'REJECTED'
    ORDER BY a.position
    """,
]
