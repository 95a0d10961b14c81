-- the API's own records in the main schema (issue 19): on PostgreSQL the API writes these directly; the embedded
-- default keeps its SQLite api store, and these stay empty there (db copy carries them either way). The
-- PostgreSQL twin adds the indexes the API's reads need there (DuckDB needs none for empty tables)
CREATE TABLE api_payments (
    payment_id VARCHAR PRIMARY KEY,
    client_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    idempotency_key VARCHAR NOT NULL,
    request_hash VARCHAR NOT NULL,          -- sha256 of the request body: the same key with another body is a 409
    account_number VARCHAR NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    reference VARCHAR,
    status VARCHAR NOT NULL,
    reason_code VARCHAR,
    reason VARCHAR,
    provider VARCHAR NOT NULL,
    provider_reference VARCHAR,
    hosted_session VARCHAR UNIQUE,
    redirect_url VARCHAR,
    last_four VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ,
    ledger_state VARCHAR NOT NULL DEFAULT 'WAITING',   -- WAITING, DUE (final, not yet posted), RECORDED
    ledger_batch_id VARCHAR,
    UNIQUE (client_id, idempotency_key)     -- the idempotency key: decides between concurrent duplicates
);
CREATE TABLE api_setup_requests (
    request_id VARCHAR PRIMARY KEY,
    client_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    account_number VARCHAR NOT NULL,
    body VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    result VARCHAR,
    problem VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    applied_at TIMESTAMPTZ
);
