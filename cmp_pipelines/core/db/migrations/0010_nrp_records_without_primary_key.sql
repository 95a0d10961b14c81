-- nrp_records without the (batch_id, position) primary key: a batch is written once, in one transaction that checks it is new, and the index cost 0.3 s of every million records
CREATE TABLE nrp_records_v10 (
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
    reason VARCHAR
);
INSERT INTO nrp_records_v10 SELECT * FROM nrp_records ORDER BY batch_id, position;
DROP TABLE nrp_records;
ALTER TABLE nrp_records_v10 RENAME TO nrp_records;
