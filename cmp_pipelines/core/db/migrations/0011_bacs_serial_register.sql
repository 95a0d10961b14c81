-- Bacs (issue 14): the register of submission serials per service user number (VOL1 serial unique on a day, HDR1 set id and UHL1 file number agreeing with it); the day Bacs processes each debit, which ARUDD reports as originalProcessingDate; mandates held until an operator decides
CREATE TABLE bacs_submissions (
    service_user_number VARCHAR NOT NULL,
    serial VARCHAR NOT NULL,
    input_day DATE NOT NULL,
    file_number INTEGER NOT NULL,
    batch_id VARCHAR NOT NULL,
    processing_day DATE NOT NULL,
    allocated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (service_user_number, serial),
    UNIQUE (service_user_number, input_day, file_number),
    UNIQUE (batch_id)
);
ALTER TABLE dd_collections ADD COLUMN processing_date DATE;
ALTER TABLE mandates ADD COLUMN held_reason VARCHAR;
ALTER TABLE config_bacs_return_codes ADD COLUMN mandate_action VARCHAR;
ALTER TABLE dd_returns ADD COLUMN mandate_action VARCHAR;
