"""What the CARD-mode Recurring Payments job takes on a business day, as one set-based SQL statement.

Due on $day:
- new payments: the outstanding amount of every open invoice due by $day, on accounts paying by
  recurring card with a card on file and not suspended, for invoices never extracted before, whose advance
  notice was sent before $notice_cutoff and dated by $day (core/notices.py), never more than the notice said;
- retries: soft-declined payments whose retry date has come, on accounts still paying by card and no
  longer suspended, for what is still outstanding (never more than the declined amount);
- refunds: approved card refunds due by $day never extracted, and soft-declined refunds due a retry, never to
  a card that was hard-declined (those stay approved for an operator to pay another way).
Cards whose provider is not configured ($providers) are left out; select_due reports them.

A transaction id is `P<invoice>-<attempt>` or `R<refund>-<attempt>`, so the same payment is never
selected twice and a retry is visibly the n-th attempt of its first transaction.
"""

from cmp_pipelines.core.notices import collectable_sql
from cmp_pipelines.core.rules import OUTSTANDING_SQL

SELECT_DUE_SQL = f"""
INSERT INTO card_transactions (transaction_id, batch_id, business_date, provider, kind, account_number,
    invoice_number, refund_id, amount_minor, currency, card_token, attempt, first_transaction_id, due_on, status)
WITH cards AS (
    SELECT a.account_number, c.provider, c.card_token
    FROM accounts a JOIN payment_cards c USING (account_number)
    WHERE a.payment_type = 'RECURRING_CARD' AND coalesce(a.suspended_until, $day) <= $day
      AND list_contains($providers, c.provider)
),
dead_cards AS (  -- a hard-declined card (lost, stolen, expired...) is never sent money again
    SELECT DISTINCT card_token FROM card_transactions WHERE status IN ('HARD_DECLINED', 'CANCELLED')
    UNION SELECT card_token FROM payment_cards WHERE NOT list_contains($providers, provider)
),
outstanding AS ({OUTSTANDING_SQL}),
noticed AS ({collectable_sql("RECURRING_CARD")}),
new_payments AS (
    SELECT 'P' || o.invoice_number || '-1' AS transaction_id, c.provider, 'PAYMENT' AS kind, o.account_number,
           o.invoice_number, NULL AS refund_id, least(o.outstanding_minor, n.notice_minor) AS amount_minor,
           o.currency, c.card_token, 1 AS attempt, 'P' || o.invoice_number || '-1' AS first_transaction_id, o.due_on
    FROM outstanding o JOIN cards c USING (account_number) JOIN noticed n USING (invoice_number)
    WHERE o.due_on <= $day AND o.outstanding_minor > 0
      AND NOT EXISTS (SELECT 1 FROM card_transactions t WHERE t.invoice_number = o.invoice_number)
),
retries_due AS (
    SELECT t.* FROM card_transactions t
    WHERE t.status = 'SOFT_DECLINED' AND t.retry_due_on <= $day
      AND NOT EXISTS (SELECT 1 FROM card_transactions r
                      WHERE r.first_transaction_id = t.first_transaction_id AND r.attempt > t.attempt)
),
payment_retries AS (
    SELECT 'P' || t.invoice_number || '-' || (t.attempt + 1), c.provider, 'PAYMENT', t.account_number,
           t.invoice_number, NULL, least(t.amount_minor, o.outstanding_minor), t.currency, c.card_token,
           t.attempt + 1, t.first_transaction_id, t.due_on
    FROM retries_due t JOIN cards c USING (account_number) JOIN outstanding o USING (invoice_number)
    WHERE t.kind = 'PAYMENT' AND o.outstanding_minor > 0
),
refunds AS (
    SELECT 'R' || r.refund_id || '-1', c.provider, 'REFUND', r.account_number, NULL, r.refund_id, r.amount_minor,
           r.currency, c.card_token, 1, 'R' || r.refund_id || '-1', r.due_on
    FROM card_refunds r JOIN payment_cards c USING (account_number)
    WHERE r.due_on <= $day AND NOT EXISTS (SELECT 1 FROM card_transactions t WHERE t.refund_id = r.refund_id)
      AND c.card_token NOT IN (SELECT card_token FROM dead_cards)
),
refund_retries AS (
    SELECT 'R' || t.refund_id || '-' || (t.attempt + 1), c.provider, 'REFUND', t.account_number, NULL,
           t.refund_id, t.amount_minor, t.currency, c.card_token, t.attempt + 1, t.first_transaction_id, t.due_on
    FROM retries_due t JOIN payment_cards c USING (account_number)
    WHERE t.kind = 'REFUND' AND c.card_token NOT IN (SELECT card_token FROM dead_cards)
)
SELECT transaction_id, $batch_id, $day, provider, kind, account_number, invoice_number, refund_id, amount_minor,
       currency, card_token, attempt, first_transaction_id, due_on, 'EXTRACTED'
FROM (SELECT * FROM new_payments UNION ALL SELECT * FROM payment_retries
      UNION ALL SELECT * FROM refunds UNION ALL SELECT * FROM refund_retries)
"""

# A soft decline whose invoice was settled some other way, or whose account left card payment, is not retried
# (so re-enabling card months later does not fire an old retry).
CLOSE_UNNEEDED_RETRIES_SQL = f"""
UPDATE card_transactions t SET status = 'RETRY_NOT_NEEDED'
WHERE t.status = 'SOFT_DECLINED' AND t.retry_due_on <= $day AND t.kind = 'PAYMENT'
  AND NOT EXISTS (SELECT 1 FROM card_transactions r
                  WHERE r.first_transaction_id = t.first_transaction_id AND r.attempt > t.attempt)
  AND ((SELECT o.outstanding_minor FROM ({OUTSTANDING_SQL}) o WHERE o.invoice_number = t.invoice_number) <= 0
       OR t.account_number IN (SELECT account_number FROM accounts WHERE payment_type <> 'RECURRING_CARD'))
"""

# Invoices the card flow has taken (an invoice waiting for its notice is one not among them).
COLLECTED_SQL = "SELECT invoice_number FROM card_transactions WHERE invoice_number IS NOT NULL"
