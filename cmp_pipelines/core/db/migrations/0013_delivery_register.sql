-- the delivery register of outbound documents and the register of files picked up from partners' SFTP folders (issue 17)
CREATE TABLE delivery_register (
    delivery_id BIGINT PRIMARY KEY,
    document_kind VARCHAR NOT NULL,     -- LEDGER_POSTING, NRP_ACKNOWLEDGEMENT, AUDDIS, DD_COLLECTION, CARD_EXTRACT, ...
    partner VARCHAR NOT NULL,
    local_path VARCHAR NOT NULL,        -- relative to the data dir: outbound/ledger/NRPP-....json
    remote_name VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    reference VARCHAR,                  -- the document's own id (batch id, file id): what a receipt names
    status VARCHAR NOT NULL DEFAULT 'PENDING',  -- PENDING, SENT, FAILED, CONFIRMED
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error VARCHAR,
    claimed_by VARCHAR,                 -- the deliverer sending it now, until claim_expires_at
    claim_expires_at TIMESTAMPTZ,
    transport VARCHAR,                  -- local or sftp, as configured when it was sent
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ,
    confirmed_at TIMESTAMPTZ,
    confirmation VARCHAR,               -- what the receipt said
    UNIQUE (partner, remote_name, sha256)
);
CREATE SEQUENCE delivery_register_seq START 1;

CREATE TABLE sftp_pickups (
    partner VARCHAR NOT NULL,
    feed VARCHAR NOT NULL,
    remote_path VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    remote_mtime BIGINT NOT NULL,
    local_path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    downloaded_at TIMESTAMPTZ NOT NULL,
    removed_at TIMESTAMPTZ,             -- when the remote file was removed or moved to the processed folder
    UNIQUE (partner, feed, remote_path, size_bytes, remote_mtime)
);
