-- one-off payments: the final outcome of each API payment, as the Ledger Monitor posted or refused it
CREATE TABLE one_off_payments (
    payment_id VARCHAR PRIMARY KEY,
    account_number VARCHAR NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    client_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    reason_code VARCHAR,
    provider VARCHAR NOT NULL,
    provider_reference VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ,
    batch_id VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
