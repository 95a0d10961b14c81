"""Read-side queries over the non-recurring payment records of one inbound file."""

from __future__ import annotations

import duckdb

from cmp_pipelines.core.expectations import RecordsSuite

# The columns expectations/nrp_payments.json reads, of every record as received.
NRP_SUITE = RecordsSuite("nrp_payments", "nrp_records", (
    "record_id", "account_number", "invoice_number", "amount_minor", "payment_method", "payment_date"))


def outcomes(con: duckdb.DuckDBPyConnection, file_id: str) -> list[tuple]:
    """(position, record_id, outcome, allocation, reason_code, reason, ledger_account) in file order."""
    return con.execute(
        "SELECT r.position, r.record_id, r.outcome, r.allocation, r.reason_code, r.reason, r.ledger_account "
        "FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id WHERE f.file_id = ? ORDER BY position",
        [file_id],
    ).fetchall()
