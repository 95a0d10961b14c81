"""Read-side queries over the non-recurring payment records of one inbound file."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa


def batch_frame(con: duckdb.DuckDBPyConnection, file_id: str) -> pd.DataFrame:
    """The columns the expectation suite looks at, for every record of the file's load batch.

    Integers stay integers (nullable Int64): pence never pass through a binary float, even for a range check.
    """
    with con.cursor() as cursor:  # its own result stream: Arrow straight from the relation, no extra copy
        table = cursor.sql(
            "SELECT r.record_id, r.account_number, r.invoice_number, r.amount_minor, r.payment_method, "
            "r.payment_date FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id "
            "WHERE f.file_id = $file",
            params={"file": file_id},
        ).to_arrow_table()
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def outcomes(con: duckdb.DuckDBPyConnection, file_id: str) -> list[tuple]:
    """(position, record_id, outcome, allocation, reason_code, reason, ledger_account) in file order."""
    return con.execute(
        "SELECT r.position, r.record_id, r.outcome, r.allocation, r.reason_code, r.reason, r.ledger_account "
        "FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id WHERE f.file_id = ? ORDER BY position",
        [file_id],
    ).fetchall()
