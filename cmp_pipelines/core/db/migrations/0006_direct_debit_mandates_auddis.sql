-- direct debit: mandates, their history, AUDDIS instructions, payment terms on accounts
ALTER TABLE accounts ADD COLUMN payment_term VARCHAR;
CREATE TABLE mandates (
    mandate_id VARCHAR PRIMARY KEY,
    account_number VARCHAR NOT NULL,
    service_user_number VARCHAR NOT NULL,
    reference VARCHAR NOT NULL,
    sort_code VARCHAR NOT NULL,
    bank_account VARCHAR NOT NULL,
    account_name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    pending_instruction VARCHAR,
    previous_sort_code VARCHAR,
    previous_bank_account VARCHAR,
    previous_account_name VARCHAR,
    submitted_on DATE,
    activated_on DATE,
    cancelled_on DATE,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (service_user_number, reference)
);
CREATE TABLE mandate_history (
    mandate_id VARCHAR NOT NULL,
    old_status VARCHAR,
    new_status VARCHAR NOT NULL,
    cause VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE auddis_instructions (
    batch_id VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    mandate_id VARCHAR NOT NULL,
    transaction_code VARCHAR NOT NULL,
    sort_code VARCHAR NOT NULL,
    bank_account VARCHAR NOT NULL,
    account_name VARCHAR NOT NULL,
    reference VARCHAR NOT NULL,
    PRIMARY KEY (batch_id, position)
);
