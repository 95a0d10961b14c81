"""Read-side queries over the non-recurring payment records of one inbound file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

if TYPE_CHECKING:  # pandas costs ~0.6 s to import: only the expectation step, in its run, pays it
    import pandas as pd


def batch_frame(con: duckdb.DuckDBPyConnection, file_id: str) -> pd.DataFrame:
    """The columns the expectation suite looks at, for every record of the file's load batch.

    Integers stay integers (nullable Int64): pence never pass through a binary float, even for a range check.
    Strings stay Arrow strings (pandas' pyarrow-backed StringDtype): no Python object per value, and the suite's
    regex, set and null expectations run in Arrow compute, ~4x faster on 1M rows than object columns (same
    results, benchmarks/README.md).
    """
    import pandas as pd

    with con.cursor() as cursor:  # its own result stream: Arrow straight from the relation, no extra copy
        table = cursor.sql(
            "SELECT r.record_id, r.account_number, r.invoice_number, r.amount_minor, r.payment_method, "
            "r.payment_date FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id "
            "WHERE f.file_id = $file",
            params={"file": file_id},
        ).to_arrow_table()
    strings = pd.StringDtype("pyarrow")
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.string(): strings,
                                         pa.large_string(): strings}.get)


def outcomes(con: duckdb.DuckDBPyConnection, file_id: str) -> list[tuple]:
    """(position, record_id, outcome, allocation, reason_code, reason, ledger_account) in file order."""
    return con.execute(
        "SELECT r.position, r.record_id, r.outcome, r.allocation, r.reason_code, r.reason, r.ledger_account "
        "FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id WHERE f.file_id = ? ORDER BY position",
        [file_id],
    ).fetchall()
