-- advance notice of card and direct-debit collections: one notice per payment type and invoice, raised as an
-- ADVANCE_NOTICE workflow event, SENT once the customer's message has left; a collection needs a notice SENT at
-- least the configured period before it
CREATE TABLE collection_notices (
    notice_id VARCHAR PRIMARY KEY,          -- AN-<CARD|DD>-<invoice>
    payment_type VARCHAR NOT NULL,          -- RECURRING_CARD or DIRECT_DEBIT
    account_number VARCHAR NOT NULL,
    invoice_number VARCHAR NOT NULL,
    mandate_id VARCHAR,                     -- direct debit: the mandate the notice names
    amount_minor BIGINT NOT NULL,           -- the most that may be collected under this notice
    currency VARCHAR NOT NULL,
    collection_on DATE NOT NULL,            -- the date the notice gives; never collected before it
    raised_on DATE NOT NULL,
    event_id BIGINT,
    status VARCHAR NOT NULL,                -- RAISED, then SENT
    sent_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (payment_type, invoice_number)
);
