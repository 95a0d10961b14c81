-- The ledger's idempotency keys in byte order ("C" collation), whatever the database's locale: the UNIQUE index
-- compares with memcmp instead of the locale's rules (faster on every posting), and a range of keys means the same
-- on PostgreSQL as in DuckDB, which the ledger writer's fast path relies on (core/ledger.py `_domain_is_new`).
-- Rebuilds the UNIQUE index; the rows are not rewritten.
ALTER TABLE ledger_postings ALTER COLUMN idempotency_key TYPE VARCHAR COLLATE "C";
