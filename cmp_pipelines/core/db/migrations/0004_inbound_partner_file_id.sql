-- the partner's own file id, to refuse a resent file whose bytes differ
ALTER TABLE inbound_files ADD COLUMN header_file_id VARCHAR;
