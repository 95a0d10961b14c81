-- ledger idempotency keys compared byte by byte on PostgreSQL (issue 19); DuckDB's VARCHAR already compares bytes
SELECT 1;
