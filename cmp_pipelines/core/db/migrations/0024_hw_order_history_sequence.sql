-- hw_order_history.history_seq: insertion order as a column, not rowid/ctid (rewritten by VACUUM FULL, CLUSTER, pg_repack); existing rows numbered in insertion order
CREATE SEQUENCE hw_order_history_seq;
CREATE TABLE hw_order_history_0024 (
    order_id VARCHAR NOT NULL,
    old_status VARCHAR,
    new_status VARCHAR NOT NULL,
    cause VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    history_seq BIGINT NOT NULL DEFAULT nextval('hw_order_history_seq')
);
-- DuckDB cannot make a column NOT NULL after updating it in the same transaction: the table is copied instead,
-- numbered in rowid (insertion) order, and the sequence advanced past the rows numbered (one nextval per row)
INSERT INTO hw_order_history_0024 (order_id, old_status, new_status, cause, changed_at, history_seq)
SELECT order_id, old_status, new_status, cause, changed_at, row_number() OVER (ORDER BY rowid) FROM hw_order_history;
SELECT count(nextval('hw_order_history_seq')) FROM hw_order_history;
DROP TABLE hw_order_history;
ALTER TABLE hw_order_history_0024 RENAME TO hw_order_history;
