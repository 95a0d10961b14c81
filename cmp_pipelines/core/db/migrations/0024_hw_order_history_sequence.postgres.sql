-- hw_order_history.history_seq: insertion order as a column, not rowid/ctid (rewritten by VACUUM FULL, CLUSTER, pg_repack); existing rows numbered in insertion order
CREATE SEQUENCE hw_order_history_seq;
ALTER TABLE hw_order_history ADD COLUMN history_seq BIGINT;
-- numbered in the order the history was shown until now (changed_at, then ctid): PostgreSQL keeps no insertion
-- order beyond that (ctid does not follow it even before any rewrite: a row that does not fit the last page goes
-- wherever the free space map finds room, so rows of varying width land out of order)
UPDATE hw_order_history h SET history_seq = n.seq
FROM (SELECT ctid AS row_id, row_number() OVER (ORDER BY changed_at, ctid) AS seq FROM hw_order_history) n
WHERE h.ctid = n.row_id;
SELECT setval('hw_order_history_seq', coalesce((SELECT max(history_seq) FROM hw_order_history), 0) + 1, false);
ALTER TABLE hw_order_history
    ALTER COLUMN history_seq SET DEFAULT nextval('hw_order_history_seq'),
    ALTER COLUMN history_seq SET NOT NULL;
ALTER SEQUENCE hw_order_history_seq OWNED BY hw_order_history.history_seq;
