-- any_value() on PostgreSQL before 16 (issue 19: the workflow dispatcher's SQL runs on both stores); DuckDB has it built in
SELECT 1;
