"""The record rules of the non-recurring payments file and the matching rule, as one set-based SQL pass.

The payment rules mirror `core/files/schemas/nrp_payments.schema.json` (`$defs/payment`) and add the
business rules the schema cannot express; `tests/flows/nrp/test_nrp_rules_match_schema.py` holds them to the schema.
Matching: the invoice when one is given and belongs to the account, else the account, else suspense.
"""

from __future__ import annotations

from cmp_pipelines.core.rules import ACCOUNT_RE, AMOUNT_RE, DATETIME_RE, RECORD_ID_RE, SUSPENSE_ACCOUNT

PAYMENT_METHODS = ("CASH", "CHEQUE", "POSTAL_ORDER", "BANK_TRANSFER")
INVOICE_RE = "[A-Z0-9-]{1,30}"

_METHODS_SQL = ", ".join(f"'{m}'" for m in PAYMENT_METHODS)

# The common case (a clean record) in one cheap conjunction: the list of problems, which costs a struct
# per rule per row, is only built for records that fail it. It must imply every rule below is silent.
_CLEAN = f"""coalesce(
    shape_ok AND amount_ok AND amount_minor > 0 AND (payment_date IS NULL OR payment_ts IS NOT NULL)
    AND regexp_full_match(record_id, '{RECORD_ID_RE}') AND regexp_full_match(account_number, '{ACCOUNT_RE}')
    AND (invoice_number IS NULL OR regexp_full_match(invoice_number, '{INVOICE_RE}'))
    AND payment_method IN ({_METHODS_SQL}) AND (reference IS NULL OR length(reference) <= 64)
    AND pan_field IS NULL AND id_count = 1 AND ledger_currency = $currency,
    FALSE)"""


def _problem(code: str, condition: str, message: str) -> str:
    return f"CASE WHEN {condition} THEN {{'code': '{code}', 'msg': {message}}} END"


_RULES = [
    _problem("SCHEMA_VIOLATION", "shape_error IS NOT NULL", "shape_error"),
    _problem(
        "CARD_NUMBER_DETECTED",
        "pan_field IS NOT NULL",
        "pan_field || ' contains a card number (' || pan_masked || '); card numbers are never accepted'",
    ),
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_id IS NULL", "'record_id is required'"),
    _problem(
        "SCHEMA_VIOLATION",
        f"shape_ok AND NOT regexp_full_match(record_id, '{RECORD_ID_RE}')",
        "'record_id ' || q(record_id) || ' must be 1-64 characters of A-Z a-z 0-9 . _ -'",
    ),
    _problem("SCHEMA_VIOLATION", "shape_ok AND account_number IS NULL", "'account_number is required'"),
    _problem(
        "SCHEMA_VIOLATION",
        f"shape_ok AND NOT regexp_full_match(account_number, '{ACCOUNT_RE}')",
        "'account_number ' || q(account_number) || ' must be 1-20 characters of A-Z 0-9'",
    ),
    _problem(
        "SCHEMA_VIOLATION",
        f"shape_ok AND NOT regexp_full_match(invoice_number, '{INVOICE_RE}')",
        "'invoice_number ' || q(invoice_number) || ' must be 1-30 characters of A-Z 0-9 -'",
    ),
    _problem("SCHEMA_VIOLATION", "shape_ok AND amount IS NULL", "'amount is required'"),
    _problem(
        "AMOUNT_NEGATIVE",
        r"shape_ok AND regexp_full_match(amount, '-[0-9]+(\.[0-9]+)?')",
        "'amount ' || q(amount) || ' is negative; a payment amount must be positive'",
    ),
    _problem(
        "AMOUNT_PRECISION",
        r"shape_ok AND NOT amount_ok AND regexp_full_match(amount, '[0-9]+(\.[0-9]?|\.[0-9]{3,})?')",
        "'amount ' || q(amount) || ' has ' || length(split_part(amount, '.', 2)) "
        "|| ' decimal places; exactly 2 are required'",
    ),
    _problem(
        "SCHEMA_VIOLATION",
        "shape_ok AND NOT amount_ok AND NOT regexp_full_match(amount, "
        r"'-[0-9]+(\.[0-9]+)?|[0-9]+(\.[0-9]?|\.[0-9]{3,})?')",
        "'amount ' || q(amount) || ' is not a decimal string such as 12.34 "
        "(no sign, no leading zeros, at most 12 digits before the point)'",
    ),
    _problem("AMOUNT_ZERO", "amount_minor = 0", "'amount is 0.00; a payment must be greater than zero'"),
    _problem(
        "SCHEMA_VIOLATION",
        "shape_ok AND payment_date IS NOT NULL AND NOT date_shape_ok",
        "'payment_date ' || q(payment_date) || ' is not an ISO 8601 date-time such as 2026-11-20T14:03:00Z'",
    ),
    _problem(
        "INVALID_PAYMENT_DATE",
        "date_shape_ok AND payment_ts IS NULL",
        "'payment_date ' || q(payment_date) || ' is not a real calendar date and time'",
    ),
    _problem("SCHEMA_VIOLATION", "shape_ok AND payment_method IS NULL", "'payment_method is required'"),
    _problem(
        "SCHEMA_VIOLATION",
        f"shape_ok AND payment_method NOT IN ({_METHODS_SQL})",
        f"'payment_method ' || q(payment_method) || ' is not one of {', '.join(PAYMENT_METHODS)}'",
    ),
    _problem(
        "SCHEMA_VIOLATION", "shape_ok AND length(reference) > 64", "'reference is longer than 64 characters'"
    ),
    _problem(
        "DUPLICATE_RECORD_ID",
        "record_id IS NOT NULL AND id_count > 1",
        "'record_id ' || q(record_id) || ' appears ' || id_count || ' times in the file; record ids must be unique'",
    ),
    _problem(
        "CURRENCY_MISMATCH",
        "ledger_currency <> $currency",
        "'the file currency ' || $currency || ' differs from the currency ' || ledger_currency || ' of ' "
        "|| CASE WHEN known_account IS NULL THEN 'the suspense account' ELSE 'account ' || account_number END",
    ),
]

CLASSIFY_AND_MATCH_SQL = f"""
INSERT INTO nrp_records
WITH repeated AS (  -- a grouping and a join to the few repeats: cheaper than a window over every record
    SELECT record_id, count(*) AS times FROM raw WHERE record_id IS NOT NULL GROUP BY record_id HAVING times > 1
), base AS (
    SELECT raw.*,
           shape_error IS NULL AS shape_ok,
           coalesce(repeated.times, 1) AS id_count,
           coalesce(regexp_full_match(amount, '{AMOUNT_RE}'), FALSE) AS amount_ok,
           coalesce(regexp_full_match(payment_date, '{DATETIME_RE}'), FALSE) AS date_shape_ok
    FROM raw LEFT JOIN repeated ON repeated.record_id = raw.record_id
), typed AS (
    SELECT base.*,
           CASE WHEN amount_ok THEN CAST(replace(amount, '.', '') AS BIGINT) END AS amount_minor,
           CASE WHEN date_shape_ok THEN TRY_CAST(payment_date AS TIMESTAMPTZ) END AS payment_ts
    FROM base
), joined AS (
    SELECT typed.*, a.account_number AS known_account,
           coalesce(a.currency, (SELECT currency FROM accounts WHERE account_number = '{SUSPENSE_ACCOUNT}'))
               AS ledger_currency,
           i.account_number AS invoice_owner
    FROM typed
    LEFT JOIN accounts a ON a.account_number = typed.account_number AND NOT a.is_suspense
    LEFT JOIN invoices i ON i.invoice_number = typed.invoice_number
), judged AS (
    SELECT joined.*,
           CASE WHEN {_CLEAN} THEN []::STRUCT(code VARCHAR, msg VARCHAR)[]
                ELSE list_filter([{", ".join(_RULES)}], lambda p: p IS NOT NULL) END AS problems
    FROM joined
)
SELECT $batch_id, position, record_id, account_number, invoice_number, amount_minor, $currency, payment_ts,
       payment_method, reference,
       CASE WHEN len(problems) = 0 THEN 'ACCEPTED' ELSE 'REJECTED' END AS outcome,
       CASE WHEN len(problems) > 0 THEN NULL
            WHEN known_account IS NULL THEN 'SUSPENSE'
            WHEN invoice_owner = account_number THEN 'INVOICE'
            ELSE 'ACCOUNT' END AS allocation,
       CASE WHEN len(problems) > 0 THEN NULL
            WHEN known_account IS NULL THEN '{SUSPENSE_ACCOUNT}'
            ELSE account_number END AS ledger_account,
       CASE WHEN len(problems) > 0 THEN problems[1].code
            WHEN known_account IS NULL THEN 'UNKNOWN_ACCOUNT'
            WHEN invoice_number IS NOT NULL AND invoice_owner IS NULL THEN 'INVOICE_NOT_FOUND'
            WHEN invoice_number IS NOT NULL AND invoice_owner <> account_number THEN 'INVOICE_OF_ANOTHER_ACCOUNT'
       END AS reason_code,
       CASE WHEN len(problems) > 0 THEN array_to_string(list_transform(problems, lambda p: p.msg), '; ')
            WHEN known_account IS NULL THEN 'account ' || q(account_number) || ' is unknown; held in suspense'
            WHEN invoice_number IS NOT NULL AND invoice_owner IS NULL
                 THEN 'invoice ' || q(invoice_number) || ' not found; allocated to the account'
            WHEN invoice_number IS NOT NULL AND invoice_owner <> account_number
                 THEN 'invoice ' || q(invoice_number) || ' belongs to another account; allocated to the account'
       END AS reason
FROM judged
"""


# A partner that resends the same payments under a new header file_id: an accepted record repeating the record
# id, account and amount of a record this partner sent in an earlier file within the window is HELD (not
# posted) until an operator releases it. Set-based: one join of the new batch with the window's records.
HOLD_SUSPECTED_DUPLICATES_SQL = """
UPDATE nrp_records AS r
SET outcome = 'HELD', reason_code = 'SUSPECTED_DUPLICATE',
    reason = 'record_id ' || q(r.record_id) || ' with the same account and amount was already received in file '
             || q(p.first_file) || ' on ' || strftime(p.first_at AT TIME ZONE 'UTC', '%Y-%m-%d')
             || '; held as a suspected duplicate until an operator releases it'
FROM (
    SELECT e.record_id, e.account_number, e.amount_minor,
           arg_min(f.header_file_id, b.created_at) AS first_file, min(b.created_at) AS first_at
    FROM nrp_records e
    JOIN batches b ON b.batch_id = e.batch_id
    JOIN inbound_files f ON f.batch_id = b.batch_id
    JOIN (SELECT record_id, account_number, amount_minor FROM nrp_records
          WHERE batch_id = $batch_id AND outcome = 'ACCEPTED') n
      ON n.record_id = e.record_id AND n.account_number = e.account_number AND n.amount_minor = e.amount_minor
    WHERE b.kind = 'NRP_LOAD' AND b.partner = $partner AND b.batch_id <> $batch_id AND b.created_at >= $since
      AND e.outcome IN ('ACCEPTED', 'HELD')
    GROUP BY ALL
) AS p
WHERE r.batch_id = $batch_id AND r.outcome = 'ACCEPTED' AND r.record_id = p.record_id
  AND r.account_number = p.account_number AND r.amount_minor = p.amount_minor
"""
