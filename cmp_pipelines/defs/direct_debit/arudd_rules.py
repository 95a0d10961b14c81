"""Classifying an ARUDD report's returned debits, set-based SQL.

A returned item is checked, matched to the debit we collected (mandate reference, original processing date and
transaction code; the amount must agree), and its four-digit returnCode mapped to a rejection code
(config/rejection_codes.yaml `bacs_return_codes`). It is then handled by the rules shared with card declines
(core/rejections.py): reason 0 (refer to payer) is soft and re-presented once with `18`.

Each return also acts on its mandate (`arudd_mandate_actions`): CANCEL (instruction cancelled, no instruction,
account closed, ...) cancels it and collection stops; HOLD (account transferred, ...) stops collection until the
ADDACS amendment or an operator; an unmapped returnCode HOLDs it too, never leaving the mandate collecting.
"""

from __future__ import annotations

from cmp_pipelines.core.rejections import OUTCOME_SQL, RETRY_DUE_SQL
from cmp_pipelines.core.rules import AMOUNT_RE, first_problem
from cmp_pipelines.defs.direct_debit.addacs_rules import REFERENCE_RE

UNCONFIGURED_EVENT = ("RECURRING_PAYMENT", "DD_RETURN_CODE_UNKNOWN")

_RECORD_PROBLEMS = [
    (f"NOT coalesce(regexp_full_match(reference, '{REFERENCE_RE}'), FALSE)", "INVALID_RECORD",
     "'ref ' || coalesce(q(reference), 'missing') || ' must be 1-18 characters of A-Z 0-9 space . / & -'"),
    ("NOT coalesce(regexp_full_match(return_code, '[0-9]{4}'), FALSE)", "INVALID_RECORD",
     "'returnCode ' || coalesce(q(return_code), 'missing') || ' must be four digits'"),
    ("NOT coalesce(transaction_code IN ('01', '17', '18', '19'), FALSE)", "INVALID_RECORD",
     "'transCode ' || coalesce(q(transaction_code), 'missing') || ' is not a direct debit (01, 17, 18, 19)'"),
    ("processing_day IS NULL", "INVALID_RECORD",
     "'originalProcessingDate ' || coalesce(q(original_processing_date), 'missing') || ' must be a date YYYY-MM-DD'"),
    ("amount_minor IS NULL", "INVALID_RECORD",
     "'valueOf ' || coalesce(q(amount), 'missing') || ' must be a decimal amount with two places'"),
    ("currency IS DISTINCT FROM 'GBP'", "INVALID_RECORD",
     "'currency ' || coalesce(q(currency), 'missing') || ' must be GBP: Bacs debits are in sterling'"),
]
_MATCH_PROBLEMS = [
    ("known_collection IS NULL", "UNKNOWN_REFERENCE",
     "'no ' || transaction_code || ' debit with reference ' || q(reference) || ' was collected on ' "
     "|| processing_day"),
    ("collection_amount <> amount_minor", "AMOUNT_MISMATCH",
     "'debit ' || known_collection || ' was collected for ' || minor_to_decimal(collection_amount) "
     "|| ', the report returns ' || amount"),
    ("seen_in_file > 1", "DUPLICATE_RETURN",
     "'debit ' || known_collection || ' is returned earlier in this report (position ' || first_position || ')'"),
    ("collection_status <> 'EXTRACTED'", "ALREADY_RETURNED",
     "'debit ' || known_collection || ' was already handled (' || collection_status || ' by batch ' "
     "|| coalesce(previous_batch, '?') || '); nothing done twice'"),
]

# $batch_id, $day; `raw` is the report's returned items (bacs_xml.read_arudd).
CLASSIFY_SQL = f"""
INSERT INTO dd_returns
WITH parsed AS (
    SELECT raw.*, try_cast(original_processing_date AS DATE) AS processing_day,
           CASE WHEN regexp_full_match(amount, '{AMOUNT_RE}') THEN replace(amount, '.', '')::BIGINT END
               AS amount_minor
    FROM raw
),
checked AS (
    SELECT *, {first_problem(_RECORD_PROBLEMS, 1)} AS record_problem_code,
           {first_problem(_RECORD_PROBLEMS, 2)} AS record_problem
    FROM parsed
),
candidates AS (  -- the debit this item returns; the same amount first if a mandate had two that day
    SELECT p.*, c.collection_id AS known_collection, c.account_number AS collection_account,
           c.amount_minor AS collection_amount, c.status AS collection_status, c.attempt,
           c.rejection_batch_id AS previous_batch
    FROM checked p
    LEFT JOIN dd_collections c ON p.record_problem_code IS NULL AND c.reference = p.reference
         AND coalesce(c.processing_date, c.business_date) = p.processing_day
         AND c.transaction_code = p.transaction_code
    QUALIFY row_number() OVER (PARTITION BY p.position
                               ORDER BY c.amount_minor = p.amount_minor DESC, c.collection_id) = 1
),
ranked AS (  -- only a return that matches its debit counts as an earlier return of it
    SELECT *,
           row_number() OVER (PARTITION BY known_collection, collection_amount IS NOT DISTINCT FROM amount_minor
                              ORDER BY position) AS seen_in_file,
           first(position) OVER (PARTITION BY known_collection, collection_amount IS NOT DISTINCT FROM amount_minor
                                 ORDER BY position) AS first_position
    FROM candidates
),
coded AS (
    SELECT r.*, b.rejection_code, b.mandate_action, k.code AS known_code, k.decline, k.retries, k.suspension_days,
           coalesce(record_problem_code, {first_problem(_MATCH_PROBLEMS, 1)}) AS problem_code,
           coalesce(record_problem, {first_problem(_MATCH_PROBLEMS, 2)}) AS problem
    FROM ranked r
    LEFT JOIN config_bacs_return_codes b ON b.return_code = r.return_code
    LEFT JOIN config_rejection_codes k ON k.code = b.rejection_code
)
SELECT $batch_id, position, reference, transaction_code, return_code, return_description, processing_day,
       amount_minor, currency, payer_sort_code, payer_account,
       CASE WHEN problem_code IS NULL THEN known_collection END, collection_account,
       coalesce(known_code, 'RC' || return_code),
       {OUTCOME_SQL},
       CASE WHEN problem_code IS NULL THEN decline END,
       attempt,
       {RETRY_DUE_SQL},
       coalesce(problem_code, CASE WHEN known_code IS NULL THEN 'UNKNOWN_RETURN_CODE' END),
       coalesce(problem, CASE WHEN known_code IS NULL THEN 'returnCode ' || q(return_code)
           || coalesce(' (' || return_description || ')', '') || ' is not mapped in config/rejection_codes.yaml '
           || 'bacs_return_codes; the debit is reversed but not re-presented, and mandate reference '
           || reference || ' is held (no collection) until an operator maps the code and runs '
           || '`cmp-pipelines mandates resume` or `cancel`' END),
       CASE WHEN problem_code IS NULL THEN coalesce(mandate_action, 'HOLD') END,
       NULL, NULL  -- new_payment_type, payment_type_note: set by the rejections engine when it reverts
FROM coded
"""

# What each handled return does to its mandate; $batch_id, $now, $day. History first, while the status is old.
_MANDATE_TARGETS = """
    SELECT DISTINCT ON (c.mandate_id) c.mandate_id, r.mandate_action,
           'ARUDD returnCode ' || r.return_code || coalesce(' (' || r.return_description || ')', '')
           || CASE WHEN r.problem_code = 'UNKNOWN_RETURN_CODE' THEN ' is unmapped: held until an operator decides'
                   WHEN r.mandate_action = 'HOLD' THEN ': held until the ADDACS amendment or an operator'
                   ELSE ': cancelled, collection stops' END AS cause
    FROM dd_returns r JOIN dd_collections c USING (collection_id)
    WHERE r.batch_id = $batch_id AND r.mandate_action IN ('CANCEL', 'HOLD')
    ORDER BY c.mandate_id, r.mandate_action = 'CANCEL' DESC, r.position
"""
MANDATE_ACTION_SQL = [
    f"""
    INSERT INTO mandate_history
    SELECT m.mandate_id, m.status, CASE t.mandate_action WHEN 'CANCEL' THEN 'CANCELLED' ELSE 'HELD' END, t.cause, $now
    FROM mandates m JOIN ({_MANDATE_TARGETS}) t USING (mandate_id)
    WHERE m.status NOT IN ('CANCELLED', 'FAILED')
    """,
    f"""
    UPDATE mandates m SET status = CASE t.mandate_action WHEN 'CANCEL' THEN 'CANCELLED' ELSE 'HELD' END,
        cancelled_on = CASE t.mandate_action WHEN 'CANCEL' THEN $day END,
        held_reason = CASE t.mandate_action WHEN 'HOLD' THEN t.cause END,
        pending_instruction = NULL, final_collection_requested = FALSE
    FROM ({_MANDATE_TARGETS}) t
    WHERE m.mandate_id = t.mandate_id AND m.status NOT IN ('CANCELLED', 'FAILED')
    """,
]

# What each handled return tells the customer (one communication per returned debit).
COMMUNICATION_SQL = """
INSERT INTO customer_communications (batch_id, account_number, template, source_ref, body, created_at)
SELECT $batch_id, r.account_number,
       CASE r.outcome WHEN 'RETRY_SCHEDULED' THEN 'DD_REPRESENTATION'
                      WHEN 'HARD_DECLINE' THEN 'DD_PAYMENT_RETURNED' ELSE 'DD_PAYMENT_CANCELLED' END,
       r.collection_id,
       'Your direct debit of ' || minor_to_decimal(c.amount_minor) || ' ' || c.currency || ' collected on '
       || c.business_date || ' was returned by your bank (' || k.description || '). '
       || CASE r.outcome
              WHEN 'RETRY_SCHEDULED' THEN 'We will collect it again on or after ' || r.retry_due_on || '.'
              WHEN 'RETRY_CANCELLED' THEN 'Your account no longer pays by direct debit: please pay another way.'
              ELSE 'Your account now pays by ' || lower(replace(r.new_payment_type, '_', ' ')) || ' payment'
                   || CASE WHEN r.new_payment_type = 'MANUAL' THEN ': please pay the amount another way.'
                           ELSE ': the amount will be collected that way.' END END,
       $now
FROM dd_returns r
JOIN dd_collections c USING (collection_id)
JOIN config_rejection_codes k ON k.code = r.reason_code
WHERE r.batch_id = $batch_id
  AND r.outcome IN ('RETRY_SCHEDULED', 'RETRIES_EXHAUSTED', 'RETRY_CANCELLED', 'HARD_DECLINE')
ON CONFLICT DO NOTHING
"""
