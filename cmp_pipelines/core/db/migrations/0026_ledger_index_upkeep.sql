-- the ledger's PostgreSQL-only lookup indexes made cheaper to keep (issue 19); DuckDB has neither index
SELECT 1;
