-- core reference tables
CREATE TABLE accounts (
    account_number VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    currency VARCHAR NOT NULL DEFAULT 'GBP',
    status VARCHAR NOT NULL DEFAULT 'ACTIVE',
    payment_type VARCHAR NOT NULL DEFAULT 'MANUAL',
    is_suspense BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE invoices (
    invoice_number VARCHAR PRIMARY KEY,
    account_number VARCHAR NOT NULL,
    issued_on DATE NOT NULL,
    due_on DATE NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL DEFAULT 'GBP'
);
CREATE INDEX invoices_account ON invoices(account_number);
CREATE TABLE partners (
    partner_id VARCHAR NOT NULL,
    feed VARCHAR NOT NULL,
    PRIMARY KEY (partner_id, feed)
);
