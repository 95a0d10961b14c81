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
-- PostgreSQL only: what the API looks up per request (its payments by account, the monitor's due payments, an
-- account's balance and events), so a request reads a few rows, not a table of millions
CREATE INDEX api_payments_account ON api_payments (account_number, created_at);
CREATE INDEX api_payments_ledger ON api_payments (ledger_state, status);
CREATE INDEX api_setup_requests_status ON api_setup_requests (status, created_at);
CREATE INDEX ledger_postings_account ON ledger_postings (account_number);
CREATE INDEX workflow_events_account ON workflow_events (account_number);
-- and the money formatter the embedded store defines as a DuckDB macro on every connection
-- (core/db/connection.SQL_MACROS), for the set-up services' SQL the API runs here
CREATE OR REPLACE FUNCTION minor_to_decimal(a BIGINT) RETURNS TEXT LANGUAGE SQL IMMUTABLE AS $$
    SELECT CASE WHEN a IS NULL THEN NULL
                ELSE (CASE WHEN a < 0 THEN '-' ELSE '' END) || (abs(a) / 100)::TEXT || '.'
                     || lpad((abs(a) % 100)::TEXT, 2, '0') END
$$;
