-- the billing feed: each record of a billing run file with its outcome (an issued invoice names its run here)
CREATE TABLE billing_records (
    batch_id VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    record_id VARCHAR,
    record_type VARCHAR,
    account_number VARCHAR,
    name VARCHAR,
    email VARCHAR,
    phone VARCHAR,
    payment_term VARCHAR,
    invoice_number VARCHAR,
    amount_minor BIGINT,
    currency VARCHAR NOT NULL,
    issue_date DATE,
    due_on DATE,
    outcome VARCHAR NOT NULL,       -- ACCEPTED or REJECTED
    action VARCHAR,                 -- CREATED, UPDATED (accounts), ISSUED (invoices)
    reason_code VARCHAR,
    reason VARCHAR,
    PRIMARY KEY (batch_id, position)
);
-- the billing API's invoices by the client's Idempotency-Key: the same key and body replay, another body is refused
CREATE TABLE invoice_requests (
    client_id VARCHAR NOT NULL,
    idempotency_key VARCHAR NOT NULL,
    request_hash VARCHAR NOT NULL,
    invoice_number VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (client_id, idempotency_key)
);
