"""Classifying a provider's card rejection records, set-based SQL.

A record is first checked (shape, fields, card numbers), then matched to the transaction we extracted
for this provider. A matched rejection is handled by its reason code (config/rejection_codes.yaml) with the
rules shared with returned direct debits (core/rejections.py). Anything else is REJECTED with the
problem, and changes nothing.
"""

from __future__ import annotations

from cmp_pipelines.core.rejections import OUTCOME_SQL, RETRY_DUE_SQL
from cmp_pipelines.core.rules import ACCOUNT_RE, AMOUNT_RE, DATETIME_RE, REASON_CODE_RE, RECORD_ID_RE, first_problem

TRANSACTION_RE = "[A-Za-z0-9._-]{1,80}"
UNCONFIGURED_EVENT = ("RECURRING_PAYMENT", "CARD_REJECTION_CODE_UNKNOWN")

# Problems of the record itself, whatever we extracted: the first that applies is reported.
_RECORD_PROBLEMS = [
    ("shape_error IS NOT NULL", "INVALID_RECORD", "shape_error"),
    ("pan_field IS NOT NULL", "CARD_NUMBER_DETECTED",
     "pan_field || ' contains a card number (' || pan_masked || '); card numbers are never accepted'"),
    # An id that is not even shaped like ours and holds a card number is not ours: say so before its shape
    (f"transaction_pan IS NOT NULL AND NOT coalesce(regexp_full_match(transaction_id, '{TRANSACTION_RE}'), FALSE)",
     "CARD_NUMBER_DETECTED",
     "'transaction_id contains a card number (' || transaction_pan || '); card numbers are never accepted'"),
    (f"account_pan IS NOT NULL AND NOT coalesce(regexp_full_match(account_number, '{ACCOUNT_RE}'), FALSE)",
     "CARD_NUMBER_DETECTED",
     "'account_number contains a card number (' || account_pan || '); card numbers are never accepted'"),
    (f"NOT coalesce(regexp_full_match(record_id, '{RECORD_ID_RE}'), FALSE)", "INVALID_RECORD",
     "'record_id ' || coalesce(q(record_id), 'null') || ' must be 1-64 characters of A-Z a-z 0-9 . _ -'"),
    ("id_count > 1", "DUPLICATE_RECORD_ID", "'record_id ' || q(record_id) || ' appears more than once in the file'"),
    (f"NOT coalesce(regexp_full_match(transaction_id, '{TRANSACTION_RE}'), FALSE)", "INVALID_RECORD",
     "'transaction_id ' || coalesce(q(transaction_id), 'null') || ' must be 1-80 characters of A-Z a-z 0-9 . _ -'"),
    (f"NOT coalesce(regexp_full_match(account_number, '{ACCOUNT_RE}'), FALSE)", "INVALID_RECORD",
     "'account_number ' || coalesce(q(account_number), 'null') || ' must be 1-20 characters of A-Z 0-9'"),
    (f"NOT coalesce(regexp_full_match(amount, '{AMOUNT_RE}'), FALSE)", "INVALID_RECORD",
     "'amount ' || coalesce(q(amount), 'null') || ' must be a decimal string with exactly two places'"),
    (f"NOT coalesce(regexp_full_match(reason_code, '{REASON_CODE_RE}'), FALSE)", "INVALID_RECORD",
     "'reason_code ' || coalesce(q(reason_code), 'null') || ' must be 1-8 letters or digits'"),
    ("reason_text IS NOT NULL AND length(reason_text) > 200", "INVALID_RECORD",
     "'reason_text is longer than 200 characters'"),
    ("rejected_ts IS NULL", "INVALID_RECORD",
     "'rejected_at ' || coalesce(q(rejected_at), 'null') || ' must be an ISO 8601 date-time with a zone'"),
]
# Problems matching a well-formed record to what we extracted. Our own ids may happen to pass the card-number
# test (13+ digits passing Luhn), so ids are only treated as card numbers when they are not ours.
_MATCH_PROBLEMS = [
    ("known_transaction IS NULL AND transaction_pan IS NOT NULL", "CARD_NUMBER_DETECTED",
     "'transaction_id contains a card number (' || transaction_pan || '); card numbers are never accepted'"),
    ("account_number IS DISTINCT FROM transaction_account AND account_pan IS NOT NULL", "CARD_NUMBER_DETECTED",
     "'account_number contains a card number (' || account_pan || '); card numbers are never accepted'"),
    ("known_transaction IS NULL", "UNKNOWN_TRANSACTION",
     "'transaction ' || q(transaction_id) || ' was never extracted for ' || $provider"),
    ("transaction_account <> account_number", "ACCOUNT_MISMATCH",
     "'transaction ' || q(transaction_id) || ' belongs to ' || transaction_account || ', not ' || account_number"),
    ("transaction_amount <> amount_minor", "AMOUNT_MISMATCH",
     "'transaction ' || q(transaction_id) || ' was extracted for ' || minor_to_decimal(transaction_amount) "
     "|| ', the rejection says ' || amount"),
    ("transaction_currency <> $currency", "CURRENCY_MISMATCH",
     "'transaction ' || q(transaction_id) || ' was extracted in ' || transaction_currency || ', the file is in ' "
     "|| $currency"),
    ("seen_in_file > 1", "DUPLICATE_REJECTION",
     "'transaction ' || q(transaction_id) || ' is rejected earlier in this file (record ' "
     "|| coalesce(q(first_record), 'at position ' || first_position) || ')'"),
    ("transaction_status <> 'EXTRACTED'", "ALREADY_REJECTED",
     "'transaction ' || q(transaction_id) || ' was already handled (' || transaction_status || ' by batch ' "
     "|| coalesce(previous_batch, '?') || '); nothing done twice'"),
]




# $batch_id, $provider, $currency, $day; `raw` is the Arrow table of records with shape_error, pan_field,
# pan_masked (card numbers in the non-id fields) and transaction_pan, account_pan (in the id fields).
_PROBLEM = ("coalesce(problem, CASE WHEN known_code IS NULL THEN 'reason code ' || q(reason_code) || ' is not "
            "configured in config/rejection_codes.yaml; the payment is reversed but not retried' END)")
_TX_LEAK = "transaction_pan IS NOT NULL AND known_transaction IS NULL"
_ACCOUNT_LEAK = "account_pan IS NOT NULL AND account_number IS DISTINCT FROM transaction_account"
# The problem as stored: an id that holds a card number and is not ours is quoted masked, whatever the problem
_MASKED_PROBLEM = f"""CASE WHEN {_TX_LEAK} AND {_ACCOUNT_LEAK}
                 THEN replace(replace({_PROBLEM}, transaction_id, transaction_masked), account_number, account_masked)
            WHEN {_TX_LEAK} THEN replace({_PROBLEM}, transaction_id, transaction_masked)
            WHEN {_ACCOUNT_LEAK} THEN replace({_PROBLEM}, account_number, account_masked)
            ELSE {_PROBLEM} END"""

CLASSIFY_SQL = f"""
INSERT INTO card_rejections
WITH parsed AS (
    SELECT raw.*,
           count(*) OVER (PARTITION BY record_id) AS id_count,
           CASE WHEN regexp_full_match(amount, '{AMOUNT_RE}') THEN replace(amount, '.', '')::BIGINT END
               AS amount_minor,
           CASE WHEN regexp_full_match(rejected_at, '{DATETIME_RE}') THEN try_cast(rejected_at AS TIMESTAMPTZ) END
               AS rejected_ts
    FROM raw
),
checked AS (
    SELECT *, {first_problem(_RECORD_PROBLEMS, 1)} AS record_problem_code,
           {first_problem(_RECORD_PROBLEMS, 2)} AS record_problem
    FROM parsed
),
ranked AS (  -- only well-formed records count as an earlier rejection of the same transaction
    SELECT *,
           row_number() OVER (PARTITION BY transaction_id, record_problem_code IS NULL ORDER BY position)
               AS seen_in_file,
           first(record_id) OVER (PARTITION BY transaction_id, record_problem_code IS NULL ORDER BY position)
               AS first_record,
           first(position) OVER (PARTITION BY transaction_id, record_problem_code IS NULL ORDER BY position)
               AS first_position
    FROM checked
),
matched AS (
    SELECT p.*, t.transaction_id AS known_transaction, t.account_number AS transaction_account,
           t.amount_minor AS transaction_amount, t.currency AS transaction_currency, t.status AS transaction_status,
           t.attempt, t.rejection_batch_id AS previous_batch,
           c.code AS known_code, c.decline, c.retries, c.suspension_days
    FROM ranked p
    LEFT JOIN card_transactions t ON t.transaction_id = p.transaction_id AND t.provider = $provider
    LEFT JOIN config_rejection_codes c ON c.code = p.reason_code
),
classified AS (
    SELECT *,
           coalesce(record_problem_code, {first_problem(_MATCH_PROBLEMS, 1)}) AS problem_code,
           coalesce(record_problem, {first_problem(_MATCH_PROBLEMS, 2)}) AS problem
    FROM matched
)
SELECT $batch_id, position, record_id,
       -- an id holding a card number that is not ours is stored masked, whichever problem is reported first
       CASE WHEN {_TX_LEAK} THEN transaction_masked ELSE transaction_id END,
       CASE WHEN {_ACCOUNT_LEAK} THEN account_masked ELSE account_number END,
       amount_minor, reason_code, rejected_ts,
       {OUTCOME_SQL},
       CASE WHEN problem_code IS NULL THEN decline END,
       attempt,
       {RETRY_DUE_SQL},
       coalesce(problem_code, CASE WHEN known_code IS NULL THEN 'UNKNOWN_REASON_CODE' END),
       {_MASKED_PROBLEM},
       NULL, NULL  -- new_payment_type, payment_type_note: set by the rejections engine when it reverts
FROM classified
"""

# What each handled rejection tells the customer (one communication per rejected transaction).
COMMUNICATION_SQL = """
INSERT INTO customer_communications (batch_id, account_number, template, source_ref, body, created_at)
SELECT $batch_id, r.account_number,
       CASE WHEN t.kind = 'REFUND' THEN 'CARD_REFUND_FAILED'
            WHEN r.outcome = 'RETRY_SCHEDULED' THEN 'CARD_PAYMENT_RETRY'
            WHEN r.outcome IN ('RETRIES_EXHAUSTED', 'RETRY_CANCELLED') THEN 'CARD_PAYMENT_CANCELLED'
            ELSE 'CARD_PAYMENT_DECLINED' END,
       r.transaction_id,
       CASE WHEN t.kind = 'REFUND' THEN
                'We could not refund ' || minor_to_decimal(t.amount_minor) || ' ' || t.currency
                || ' to your card ending ' || coalesce(c.last_four, '****') || ' (' || k.description || ').'
                || CASE WHEN r.outcome = 'RETRY_SCHEDULED' THEN ' We will try again on ' || r.retry_due_on || '.'
                        ELSE ' Our team will contact you to arrange the refund another way.' END
            WHEN r.outcome = 'RETRY_SCHEDULED' THEN
                'Your card payment of ' || minor_to_decimal(t.amount_minor) || ' ' || t.currency
                || ' for invoice ' || t.invoice_number || ' was declined (' || k.description || '). '
                || 'We will try again on ' || r.retry_due_on || '.'
            ELSE
                'Your card payment of ' || minor_to_decimal(t.amount_minor) || ' ' || t.currency
                || ' for invoice ' || t.invoice_number || ' was declined (' || k.description || ')'
                || CASE WHEN r.outcome = 'RETRIES_EXHAUSTED' THEN ' after ' || r.attempt || ' attempts' ELSE '' END
                || CASE WHEN r.outcome = 'RETRY_CANCELLED' THEN '. Your account no longer pays by recurring card, '
                        || 'so it will not be retried: please pay the invoice another way.'
                        ELSE '. Your recurring card payment is cancelled and your account now pays by '
                        || lower(replace(r.new_payment_type, '_', ' ')) || ' payment'
                        || CASE WHEN r.new_payment_type = 'MANUAL' THEN ': please pay the invoice another way.'
                                ELSE ': the amount will be collected that way.' END
                   END
       END,
       $now
FROM card_rejections r
JOIN card_transactions t USING (transaction_id)
JOIN config_rejection_codes k ON k.code = r.reason_code
LEFT JOIN payment_cards c ON c.account_number = r.account_number
WHERE r.batch_id = $batch_id
  AND r.outcome IN ('RETRY_SCHEDULED', 'RETRIES_EXHAUSTED', 'RETRY_CANCELLED', 'HARD_DECLINE')
ON CONFLICT DO NOTHING
"""
