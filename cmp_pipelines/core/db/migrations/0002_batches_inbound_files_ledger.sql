-- batches, inbound files and the sales ledger
CREATE TABLE inbound_files (
    file_id VARCHAR PRIMARY KEY,
    feed VARCHAR NOT NULL,
    partner VARCHAR NOT NULL,
    file_name VARCHAR NOT NULL,
    received_path VARCHAR NOT NULL,
    ciphertext_sha256 VARCHAR NOT NULL,
    content_sha256 VARCHAR,
    size_bytes BIGINT NOT NULL,
    status VARCHAR NOT NULL,
    batch_id VARCHAR,
    duplicate_of VARCHAR,
    archived_path VARCHAR,
    quarantined_path VARCHAR,
    error_code VARCHAR,
    error VARCHAR,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ
);
CREATE TABLE batches (
    batch_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    feed VARCHAR NOT NULL,
    partner VARCHAR,
    source_file_id VARCHAR,
    parent_batch_id VARCHAR,
    status VARCHAR NOT NULL,
    record_count BIGINT NOT NULL DEFAULT 0,
    total_minor BIGINT NOT NULL DEFAULT 0,
    accepted_count BIGINT NOT NULL DEFAULT 0,
    rejected_count BIGINT NOT NULL DEFAULT 0,
    output_path VARCHAR,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ
);
CREATE TABLE nrp_records (
    batch_id VARCHAR NOT NULL,
    position BIGINT NOT NULL,
    record_id VARCHAR,
    account_number VARCHAR,
    invoice_number VARCHAR,
    amount_minor BIGINT,
    currency VARCHAR,
    payment_date TIMESTAMPTZ,
    payment_method VARCHAR,
    reference VARCHAR,
    outcome VARCHAR NOT NULL,
    allocation VARCHAR,
    ledger_account VARCHAR,
    reason_code VARCHAR,
    reason VARCHAR,
    PRIMARY KEY (batch_id, position)
);
CREATE SEQUENCE ledger_posting_seq;
CREATE TABLE ledger_postings (
    posting_id BIGINT NOT NULL DEFAULT nextval('ledger_posting_seq'),
    idempotency_key VARCHAR NOT NULL UNIQUE,
    account_number VARCHAR NOT NULL,
    invoice_number VARCHAR,
    kind VARCHAR NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL,
    batch_id VARCHAR NOT NULL,
    source_ref VARCHAR,
    effective_at TIMESTAMPTZ,
    posted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
