"""What the DD-mode Recurring Payments job collects on a business day, as set-based SQL.

Due on $day (the entry day of the Bacs cycle: the money leaves the payer's account), per ACTIVE mandate of an
account paying by direct debit and not suspended:
- new debits: the outstanding amount of every GBP invoice due by $day whose advance notice was sent before
  $notice_cutoff and is dated by $day (core/notices.py; never more than the notice said), never collected before,
  summed into ONE debit per mandate (the payer's
  bank sees one debit under the mandate reference). `01` when the mandate has never been collected, `19` when
  the mandate is to be cancelled after this collection, `17` otherwise;
- re-presentations: soft-returned debits whose retry date has come, `18`, for what is still outstanding on
  their invoices (never more than was returned).
A debit's invoices are its items, so postings, reversals and what is still owed stay per invoice.
"""

from __future__ import annotations

from cmp_pipelines.core.notices import collectable_sql
from cmp_pipelines.core.rules import OUTSTANDING_SQL

# Fills temp table dd_due: one row per invoice to collect, with its debit (collection_id, first_collection_id,
# attempt, transaction_code) and the mandate's bank details; $day, $notice (days), $daystr (yyyymmdd).
DUE_ITEMS_SQL = f"""
CREATE TEMP TABLE dd_due AS
WITH dd AS (
    SELECT m.mandate_id, m.reference, m.sort_code, m.bank_account, m.account_name, m.final_collection_requested,
           a.account_number
    FROM accounts a JOIN mandates m USING (account_number)
    WHERE a.payment_type = 'DIRECT_DEBIT' AND m.status = 'ACTIVE' AND coalesce(a.suspended_until, $day) <= $day
),
outstanding AS ({OUTSTANDING_SQL}),
noticed AS ({collectable_sql("DIRECT_DEBIT")}),
new_items AS (
    SELECT 'DD' || $daystr || '-' || replace(dd.reference, ' ', '_') AS collection_id,
           'DD' || $daystr || '-' || replace(dd.reference, ' ', '_') AS first_collection_id, 1 AS attempt,
           dd.mandate_id,
           CASE WHEN dd.final_collection_requested THEN '19'
                WHEN EXISTS (SELECT 1 FROM dd_collections c WHERE c.mandate_id = dd.mandate_id) THEN '17'
                ELSE '01' END AS transaction_code,
           o.invoice_number, least(o.outstanding_minor, n.notice_minor) AS amount_minor, dd.account_number,
           dd.reference, dd.sort_code, dd.bank_account, dd.account_name
    FROM outstanding o JOIN dd USING (account_number) JOIN noticed n USING (invoice_number)
    WHERE o.due_on <= $day AND o.outstanding_minor > 0
      AND o.currency = 'GBP'
      AND NOT EXISTS (SELECT 1 FROM dd_collection_items i WHERE i.invoice_number = o.invoice_number)
),
retries_due AS (
    SELECT c.collection_id, c.first_collection_id, c.attempt, c.mandate_id FROM dd_collections c
    WHERE c.status = 'SOFT_DECLINED' AND c.retry_due_on <= $day AND c.mandate_id IN (SELECT mandate_id FROM dd)
      AND NOT EXISTS (SELECT 1 FROM dd_collections r
                      WHERE r.first_collection_id = c.first_collection_id AND r.attempt > c.attempt)
),
retry_items AS (
    SELECT t.first_collection_id || '-' || (t.attempt + 1), t.first_collection_id, t.attempt + 1, t.mandate_id, '18',
           i.invoice_number, least(i.amount_minor, o.outstanding_minor), dd.account_number, dd.reference,
           dd.sort_code, dd.bank_account, dd.account_name
    FROM retries_due t JOIN dd USING (mandate_id) JOIN dd_collection_items i USING (collection_id)
         JOIN outstanding o USING (invoice_number)
    WHERE least(i.amount_minor, o.outstanding_minor) > 0
)
SELECT * FROM new_items UNION ALL SELECT * FROM retry_items
"""

INSERT_ITEMS_SQL = """
INSERT INTO dd_collection_items SELECT collection_id, invoice_number, amount_minor FROM dd_due
"""

# One debit per collection_id: its items share everything but the invoice and amount (one mandate, one attempt), so
# the debit is any one item's row (the lowest row id) with the items' sum: the aggregate keeps a key, a sum and a row
# id instead of nine strings per group (1.3 -> 1.1 s a million).
INSERT_COLLECTIONS_SQL = """
INSERT INTO dd_collections (collection_id, batch_id, business_date, mandate_id, account_number, reference, sort_code,
    bank_account, account_name, transaction_code, amount_minor, currency, attempt, first_collection_id, status,
    processing_date)
SELECT d.collection_id, $batch_id, $day, d.mandate_id, d.account_number, d.reference, d.sort_code, d.bank_account,
       d.account_name, d.transaction_code, s.amount_minor, 'GBP', d.attempt, d.first_collection_id, 'EXTRACTED',
       $processing
FROM (SELECT min(rowid) AS first_row, sum(amount_minor) AS amount_minor FROM dd_due GROUP BY collection_id) s
JOIN dd_due d ON d.rowid = s.first_row
"""

# After the final (19) collection, or when a mandate to be cancelled has nothing left to collect, it is cancelled
# and its 0C goes on the next AUDDIS.
FINAL_CANCELLATIONS = """
SELECT m.mandate_id, m.status FROM mandates m
WHERE m.final_collection_requested AND m.status NOT IN ('CANCELLED', 'FAILED')
  AND m.account_number NOT IN (SELECT account_number FROM accounts WHERE coalesce(suspended_until, $day) > $day)
"""

# Invoices the DD flow has taken (an invoice waiting for its notice is one not among them).
COLLECTED_SQL = "SELECT invoice_number FROM dd_collection_items"
