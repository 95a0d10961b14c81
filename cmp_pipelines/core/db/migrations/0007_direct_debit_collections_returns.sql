-- direct debit: ADDACS advices, collections and their invoices, ARUDD returns, Payments module tables
ALTER TABLE mandates ADD COLUMN final_collection_requested BOOLEAN DEFAULT FALSE;
-- A day's instructions are written once, inside the transaction that creates their batch row (whose key
-- guards it), so a per-row index bought nothing and cost a third of a 1,000,000-mandate AUDDIS run.
CREATE TABLE auddis_instructions_unindexed AS SELECT * FROM auddis_instructions;
DROP TABLE auddis_instructions;
ALTER TABLE auddis_instructions_unindexed RENAME TO auddis_instructions;
CREATE TABLE config_mandate_revision_codes (
    code VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    reason_type VARCHAR NOT NULL,
    reason_code VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    event_code VARCHAR NOT NULL
);
CREATE TABLE config_bacs_return_codes (
    return_code VARCHAR PRIMARY KEY,
    rejection_code VARCHAR NOT NULL
);
CREATE TABLE addacs_advices (
    batch_id VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    reference VARCHAR,
    payer_name VARCHAR,
    payer_sort_code VARCHAR,
    payer_account_number VARCHAR,
    reason_code VARCHAR,
    new_sort_code VARCHAR,
    new_account_number VARCHAR,
    effective_date DATE,
    mandate_id VARCHAR,
    account_number VARCHAR,
    action VARCHAR,
    outcome VARCHAR NOT NULL,
    problem_code VARCHAR,
    problem VARCHAR,
    PRIMARY KEY (batch_id, position)
);
-- Like the AUDDIS instructions, a day's debits and their items are written once under their batch row's
-- key; the ledger's UNIQUE idempotency key is what makes posting them exactly-once.
CREATE TABLE dd_collections (
    collection_id VARCHAR NOT NULL,
    batch_id VARCHAR NOT NULL,
    business_date DATE NOT NULL,
    mandate_id VARCHAR NOT NULL,
    account_number VARCHAR NOT NULL,
    reference VARCHAR NOT NULL,
    sort_code VARCHAR NOT NULL,
    bank_account VARCHAR NOT NULL,
    account_name VARCHAR NOT NULL,
    transaction_code VARCHAR NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    first_collection_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    reason_code VARCHAR,
    rejection_batch_id VARCHAR,
    retry_due_on DATE
);
CREATE TABLE dd_collection_items (
    collection_id VARCHAR NOT NULL,
    invoice_number VARCHAR NOT NULL,
    amount_minor BIGINT NOT NULL
);
CREATE TABLE dd_returns (
    batch_id VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    reference VARCHAR,
    transaction_code VARCHAR,
    return_code VARCHAR,
    return_description VARCHAR,
    original_processing_date DATE,
    amount_minor BIGINT,
    currency VARCHAR,
    payer_sort_code VARCHAR,
    payer_account VARCHAR,
    collection_id VARCHAR,
    account_number VARCHAR,
    reason_code VARCHAR,
    outcome VARCHAR NOT NULL,
    decline VARCHAR,
    attempt INTEGER,
    retry_due_on DATE,
    problem_code VARCHAR,
    problem VARCHAR,
    PRIMARY KEY (batch_id, position)
);
