-- PostgreSQL indexes for what a run pulls by batch and file (issue 19); none on DuckDB, whose zone maps serve these scans and whose indexes would slow every million-row insert
SELECT 1;
