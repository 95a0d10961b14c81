-- recurring card payments: cards on file, refunds, extracted transactions, rejections, communications
ALTER TABLE accounts ADD COLUMN suspended_until DATE;
CREATE TABLE payment_cards (
    account_number VARCHAR PRIMARY KEY,
    provider VARCHAR NOT NULL,
    card_token VARCHAR NOT NULL,
    last_four VARCHAR,
    expiry VARCHAR,
    registered_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE payment_type_changes (
    account_number VARCHAR NOT NULL,
    old_type VARCHAR NOT NULL,
    new_type VARCHAR NOT NULL,
    cause VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE card_refunds (
    refund_id VARCHAR PRIMARY KEY,
    account_number VARCHAR NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL,
    due_on DATE NOT NULL,
    reason VARCHAR,
    approved_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE card_transactions (
    transaction_id VARCHAR PRIMARY KEY,
    batch_id VARCHAR NOT NULL,
    business_date DATE NOT NULL,
    provider VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    account_number VARCHAR NOT NULL,
    invoice_number VARCHAR,
    refund_id VARCHAR,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL,
    card_token VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    first_transaction_id VARCHAR NOT NULL,
    due_on DATE NOT NULL,
    status VARCHAR NOT NULL,
    reason_code VARCHAR,
    rejection_batch_id VARCHAR,
    retry_due_on DATE
);
CREATE TABLE card_rejections (
    batch_id VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    record_id VARCHAR,
    transaction_id VARCHAR,
    account_number VARCHAR,
    amount_minor BIGINT,
    reason_code VARCHAR,
    rejected_at TIMESTAMPTZ,
    outcome VARCHAR NOT NULL,
    decline VARCHAR,
    attempt INTEGER,
    retry_due_on DATE,
    problem_code VARCHAR,
    problem VARCHAR,
    PRIMARY KEY (batch_id, position)
);
CREATE TABLE customer_communications (
    batch_id VARCHAR NOT NULL,
    account_number VARCHAR NOT NULL,
    template VARCHAR NOT NULL,
    source_ref VARCHAR NOT NULL,
    body VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (template, source_ref)
);
CREATE TABLE config_rejection_codes (
    code VARCHAR PRIMARY KEY,
    description VARCHAR NOT NULL,
    reason_type VARCHAR NOT NULL,
    reason_code VARCHAR NOT NULL,
    decline VARCHAR NOT NULL,
    retries INTEGER NOT NULL,
    suspension_days INTEGER NOT NULL,
    retry_event_type VARCHAR,
    retry_event_code VARCHAR,
    cancellation_event_type VARCHAR,
    cancellation_event_code VARCHAR,
    refund_event_type VARCHAR,
    refund_event_code VARCHAR
);
