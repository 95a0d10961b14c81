-- PostgreSQL indexes for what the hardware-order steps pull (issue 19: defs/hardware_orders/pg.py); none on DuckDB, whose zone maps serve these scans
SELECT 1;
