-- PostgreSQL indexes for what a run pulls by batch and file (issue 19); none on DuckDB, whose zone maps serve these scans and whose indexes would slow every million-row insert
CREATE INDEX nrp_records_batch ON nrp_records (batch_id);
CREATE INDEX ledger_postings_batch ON ledger_postings (batch_id);
CREATE INDEX batches_parent ON batches (parent_batch_id);
CREATE INDEX batches_partner_window ON batches (partner, kind, created_at);
CREATE INDEX inbound_files_content ON inbound_files (content_sha256);
CREATE INDEX inbound_files_header_file_id ON inbound_files (partner, header_file_id);
CREATE INDEX inbound_files_batch ON inbound_files (batch_id);
