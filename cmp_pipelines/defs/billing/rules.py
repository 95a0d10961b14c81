"""The billing run file's record rules, the account changes and the due dates, as set-based SQL over the
decrypted file's columns (registered as `raw`) and the store.

The record rules mirror `core/files/schemas/billing_run.schema.json` (`$defs/record`) and add what a schema cannot
say (a repeated id, an invoice already issued, an account in another currency); every problem of a record is
reported, first one as its reason code. `tests/flows/billing/test_billing_rules_match_schema.py` holds them to
the schema.
"""

from __future__ import annotations

from cmp_pipelines.core.rules import ACCOUNT_RE, AMOUNT_RE, RECORD_ID_RE, SUSPENSE_ACCOUNT

RECORD_TYPES = ("ACCOUNT", "INVOICE")
INVOICE_RE = "[A-Z0-9-]{1,30}"
TERM_RE = "[A-Z0-9]{1,3}"
EMAIL_RE = r"[^@\s]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
PHONE_RE = r"\+?[0-9]{7,15}"
DATE_RE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
ACCOUNT_FIELDS = ("name", "email", "phone", "payment_term")
INVOICE_FIELDS = ("invoice_number", "amount", "issue_date")


def _problem(code: str, condition: str, message: str) -> str:
    return f"CASE WHEN {condition} THEN {{'code': '{code}', 'msg': {message}}} END"


def _must_be_null(kind: str, fields: tuple[str, ...]) -> list[str]:
    return [_problem("SCHEMA_VIOLATION", f"shape_ok AND record_type = '{kind}' AND {f} IS NOT NULL",
                     f"'{f} must be null on an {kind} record'") for f in fields]


_RULES = [
    _problem("SCHEMA_VIOLATION", "shape_error IS NOT NULL", "shape_error"),
    _problem("CARD_NUMBER_DETECTED", "pan_field IS NOT NULL",
             "pan_field || ' contains a card number (' || pan_masked || '); card numbers are never accepted'"),
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_id IS NULL", "'record_id is required'"),
    _problem("SCHEMA_VIOLATION", f"shape_ok AND NOT regexp_full_match(record_id, '{RECORD_ID_RE}')",
             "'record_id ' || q(record_id) || ' must be 1-64 characters of A-Z a-z 0-9 . _ -'"),
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_type IS NULL", "'record_type is required'"),
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_type NOT IN ('ACCOUNT', 'INVOICE')",
             "'record_type ' || q(record_type) || ' is not one of ACCOUNT, INVOICE'"),
    _problem("SCHEMA_VIOLATION", "shape_ok AND account_number IS NULL", "'account_number is required'"),
    _problem("SCHEMA_VIOLATION", f"shape_ok AND NOT regexp_full_match(account_number, '{ACCOUNT_RE}')",
             "'account_number ' || q(account_number) || ' must be 1-20 characters of A-Z 0-9'"),
    # ACCOUNT records
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_type = 'ACCOUNT' AND name IS NULL",
             "'name is required on an ACCOUNT record'"),
    _problem("SCHEMA_VIOLATION", "shape_ok AND (length(name) > 100 OR length(name) = 0)",
             "'name must be 1-100 characters, got ' || length(name)"),
    _problem("SCHEMA_VIOLATION", f"shape_ok AND (length(email) > 254 OR NOT regexp_full_match(email, '{EMAIL_RE}'))",
             "'email ' || q(email) || ' is not an e-mail address'"),
    _problem("SCHEMA_VIOLATION", f"shape_ok AND NOT regexp_full_match(phone, '{PHONE_RE}')",
             "'phone ' || q(phone) || ' is not a phone number (7-15 digits, an optional leading +)'"),
    _problem("SCHEMA_VIOLATION", f"shape_ok AND NOT regexp_full_match(payment_term, '{TERM_RE}')",
             "'payment_term ' || q(payment_term) || ' must be 1-3 upper-case letters or digits'"),
    _problem("UNKNOWN_PAYMENT_TERM",
             f"regexp_full_match(payment_term, '{TERM_RE}') AND payment_term NOT IN (SELECT code FROM billing_terms)",
             "'payment_term ' || q(payment_term) || ' is not a payment term of the Payments module (known: ' "
             "|| $known_terms || ')'"),
    *_must_be_null("ACCOUNT", INVOICE_FIELDS),
    # INVOICE records
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_type = 'INVOICE' AND invoice_number IS NULL",
             "'invoice_number is required on an INVOICE record'"),
    _problem("SCHEMA_VIOLATION", f"shape_ok AND NOT regexp_full_match(invoice_number, '{INVOICE_RE}')",
             "'invoice_number ' || q(invoice_number) || ' must be 1-30 characters of A-Z 0-9 -'"),
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_type = 'INVOICE' AND amount IS NULL",
             "'amount is required on an INVOICE record'"),
    _problem("AMOUNT_NEGATIVE", r"shape_ok AND regexp_full_match(amount, '-[0-9]+(\.[0-9]+)?')",
             "'amount ' || q(amount) || ' is negative; an invoice amount is 0.00 or more (credits are not invoices)'"),
    _problem("AMOUNT_PRECISION",
             r"shape_ok AND NOT amount_ok AND regexp_full_match(amount, '[0-9]+(\.[0-9]?|\.[0-9]{3,})?')",
             "'amount ' || q(amount) || ' has ' || length(split_part(amount, '.', 2)) "
             "|| ' decimal places; exactly 2 are required'"),
    _problem("SCHEMA_VIOLATION",
             r"shape_ok AND NOT amount_ok AND NOT regexp_full_match(amount, "
             r"'-[0-9]+(\.[0-9]+)?|[0-9]+(\.[0-9]?|\.[0-9]{3,})?')",
             "'amount ' || q(amount) || ' is not a decimal string such as 12.34 "
             "(no sign, no leading zeros, at most 12 digits before the point)'"),
    _problem("SCHEMA_VIOLATION", "shape_ok AND record_type = 'INVOICE' AND issue_date IS NULL",
             "'issue_date is required on an INVOICE record'"),
    _problem("SCHEMA_VIOLATION", f"shape_ok AND NOT regexp_full_match(issue_date, '{DATE_RE}')",
             "'issue_date ' || q(issue_date) || ' is not an ISO 8601 date such as 2026-12-01'"),
    _problem("INVALID_ISSUE_DATE", f"regexp_full_match(issue_date, '{DATE_RE}') AND issue_on IS NULL",
             "'issue_date ' || q(issue_date) || ' is not a real calendar date'"),
    *_must_be_null("INVOICE", ACCOUNT_FIELDS),
    # across records and against the store
    _problem("DUPLICATE_RECORD_ID", "record_id IS NOT NULL AND id_count > 1",
             "'record_id ' || q(record_id) || ' appears ' || id_count || ' times in the file; record ids must be "
             "unique'"),
    _problem("DUPLICATE_ACCOUNT", "record_type = 'ACCOUNT' AND account_times > 1",
             "'account ' || q(account_number) || ' has ' || account_times || ' ACCOUNT records in the file; "
             "send one per account'"),
    _problem("DUPLICATE_INVOICE", "record_type = 'INVOICE' AND invoice_times > 1",
             "'invoice_number ' || q(invoice_number) || ' appears ' || invoice_times || ' times in the file'"),
    _problem("INVOICE_EXISTS", "record_type = 'INVOICE' AND issued_before IS NOT NULL",
             "'invoice_number ' || q(invoice_number) || ' was already issued (to account ' || issued_before "
             "|| '); an invoice is issued once'"),
    _problem("RESERVED_ACCOUNT",
             f"record_type = 'ACCOUNT' AND (known_suspense OR account_number = '{SUSPENSE_ACCOUNT}')",
             "'account ' || q(account_number) || ' is the suspense account; the billing system cannot change it'"),
    _problem("CURRENCY_MISMATCH", "record_type = 'ACCOUNT' AND known_currency <> $currency",
             "'the file currency ' || $currency || ' differs from the currency ' || known_currency || ' of account '"
             " || account_number"),
]

CLASSIFY_SQL = f"""
INSERT INTO billing_records
WITH ids AS (
    SELECT record_id, count(*) AS times FROM raw WHERE record_id IS NOT NULL GROUP BY 1 HAVING times > 1
), accounts_sent AS (
    SELECT account_number, count(*) AS times FROM raw WHERE record_type = 'ACCOUNT' GROUP BY 1 HAVING times > 1
), invoices_sent AS (
    SELECT invoice_number, count(*) AS times FROM raw WHERE record_type = 'INVOICE' AND invoice_number IS NOT NULL
    GROUP BY 1 HAVING times > 1
), typed AS (
    SELECT raw.*,
           shape_error IS NULL AS shape_ok,
           coalesce(ids.times, 1) AS id_count,
           coalesce(accounts_sent.times, 1) AS account_times,
           coalesce(invoices_sent.times, 1) AS invoice_times,
           coalesce(regexp_full_match(amount, '{AMOUNT_RE}'), FALSE) AS amount_ok,
           CASE WHEN regexp_full_match(amount, '{AMOUNT_RE}') THEN CAST(replace(amount, '.', '') AS BIGINT)
           END AS amount_minor,
           CASE WHEN regexp_full_match(issue_date, '{DATE_RE}') THEN TRY_CAST(issue_date AS DATE) END AS issue_on,
           a.account_number AS known_account, a.currency AS known_currency,
           coalesce(a.is_suspense, FALSE) AS known_suspense,
           i.account_number AS issued_before
    FROM raw
    LEFT JOIN ids ON ids.record_id = raw.record_id
    LEFT JOIN accounts_sent ON accounts_sent.account_number = raw.account_number AND raw.record_type = 'ACCOUNT'
    LEFT JOIN invoices_sent ON invoices_sent.invoice_number = raw.invoice_number AND raw.record_type = 'INVOICE'
    LEFT JOIN accounts a ON a.account_number = raw.account_number
    LEFT JOIN invoices i ON i.invoice_number = raw.invoice_number AND raw.record_type = 'INVOICE'
), judged AS (
    SELECT typed.*, list_filter([{", ".join(_RULES)}], lambda p: p IS NOT NULL) AS problems FROM typed
)
SELECT $batch_id, position, record_id, record_type, account_number, name, email, phone, payment_term,
       invoice_number, amount_minor, $currency, issue_on, NULL AS due_on,
       CASE WHEN len(problems) = 0 THEN 'ACCEPTED' ELSE 'REJECTED' END AS outcome,
       CASE WHEN len(problems) > 0 THEN NULL
            WHEN record_type = 'INVOICE' THEN 'ISSUED'
            WHEN known_account IS NULL THEN 'CREATED' ELSE 'UPDATED' END AS action,
       CASE WHEN len(problems) > 0 THEN problems[1].code END AS reason_code,
       CASE WHEN len(problems) > 0 THEN array_to_string(list_transform(problems, lambda p: p.msg), '; ') END
FROM judged
"""

# Accounts created or changed: every accepted ACCOUNT record at once. A new account gets the file's currency and,
# without a payment term of its own, the Payments module's default for manual payment (the payment type every
# new account starts with); a changed one keeps what the record leaves null.
UPDATE_ACCOUNTS_SQL = """
UPDATE accounts AS a
SET name = r.name, payment_term = coalesce(r.payment_term, a.payment_term), email = coalesce(r.email, a.email),
    phone = coalesce(r.phone, a.phone)
FROM billing_records r
WHERE r.batch_id = $batch_id AND r.record_type = 'ACCOUNT' AND r.outcome = 'ACCEPTED' AND r.action = 'UPDATED'
  AND a.account_number = r.account_number
"""
CREATE_ACCOUNTS_SQL = """
INSERT INTO accounts (account_number, name, currency, payment_type, payment_term, email, phone, created_at)
SELECT account_number, name, currency, 'MANUAL', coalesce(payment_term, $default_term), email, phone, $now
FROM billing_records
WHERE batch_id = $batch_id AND record_type = 'ACCOUNT' AND outcome = 'ACCEPTED' AND action = 'CREATED'
ORDER BY position
"""

# The invoices, once the accounts are up to date: the account must exist in the file's currency, and the due date
# is the issue date plus the days to pay of the account's payment term (else its payment type's default).
JUDGE_INVOICES_SQL = """
UPDATE billing_records AS r
SET outcome = CASE WHEN j.problem_code IS NULL THEN 'ACCEPTED' ELSE 'REJECTED' END,
    action = CASE WHEN j.problem_code IS NULL THEN 'ISSUED' END,
    reason_code = j.problem_code, reason = j.problem,
    due_on = CASE WHEN j.problem_code IS NULL THEN r.issue_date + CAST(j.days_to_pay AS INTEGER) END
FROM (
    SELECT r.position, t.days_to_pay,
           CASE WHEN a.account_number IS NULL OR a.is_suspense THEN 'UNKNOWN_ACCOUNT'
                WHEN a.currency <> r.currency THEN 'CURRENCY_MISMATCH'
                WHEN t.code IS NULL THEN 'NO_PAYMENT_TERM' END AS problem_code,
           CASE WHEN a.account_number IS NULL OR a.is_suspense
                    THEN 'account ' || q(r.account_number) || ' is unknown: it needs an ACCOUNT record in this or an '
                         || 'earlier billing run'
                WHEN a.currency <> r.currency
                    THEN 'the file currency ' || r.currency || ' differs from the currency ' || a.currency
                         || ' of account ' || r.account_number
                WHEN t.code IS NULL
                    THEN 'account ' || r.account_number || ' has no payment term and its payment type '
                         || a.payment_type || ' has no payment term default; the due date cannot be set' END AS problem
    FROM billing_records r
    LEFT JOIN accounts a ON a.account_number = r.account_number
    LEFT JOIN billing_terms t ON t.code = coalesce(a.payment_term, (SELECT code FROM billing_term_defaults d
                                                                    WHERE d.payment_type = a.payment_type))
    WHERE r.batch_id = $batch_id AND r.record_type = 'INVOICE' AND r.outcome = 'ACCEPTED'
) AS j
WHERE r.batch_id = $batch_id AND r.position = j.position
"""

ISSUE_INVOICES_SQL = """
INSERT INTO invoices (invoice_number, account_number, issued_on, due_on, amount_minor, currency)
SELECT invoice_number, account_number, issue_date, due_on, amount_minor, currency
FROM billing_records WHERE batch_id = $batch_id AND record_type = 'INVOICE' AND outcome = 'ACCEPTED'
ORDER BY position
"""

# The invoices this run issued, as the ledger and the next-invoice charges read them.
ISSUED_SQL = """
SELECT invoice_number, account_number, issue_date, currency, amount_minor, position
FROM billing_records WHERE batch_id = $load_batch AND record_type = 'INVOICE' AND outcome = 'ACCEPTED'
"""
