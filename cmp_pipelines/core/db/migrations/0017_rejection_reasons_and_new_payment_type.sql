-- rejection reasons and the new payment type on the events and rejections they cause
-- The configured reason type and code of the rejection (or mandate revision) code behind an event, and the
-- payment type the account moved to when the event reverted it: the actions and reports read them as fields.
ALTER TABLE workflow_events ADD COLUMN reason_type VARCHAR;
ALTER TABLE workflow_events ADD COLUMN reason_code VARCHAR;
ALTER TABLE workflow_events ADD COLUMN new_payment_type VARCHAR;
-- what a hard decline (or exhausted retries) moved the account to, and why not the configured default
ALTER TABLE card_rejections ADD COLUMN new_payment_type VARCHAR;
ALTER TABLE card_rejections ADD COLUMN payment_type_note VARCHAR;
ALTER TABLE dd_returns ADD COLUMN new_payment_type VARCHAR;
ALTER TABLE dd_returns ADD COLUMN payment_type_note VARCHAR;
